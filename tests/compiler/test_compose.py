from __future__ import annotations

from pathlib import Path

import pytest

from oellm.compiler.compose import compose
from oellm.compiler.errors import ConfigError
from oellm.compiler.library import Library
from tests.helpers import write


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    """A small config library of its own, so these tests do not depend on the built-in one."""
    root = tmp_path / "lib"
    write(
        root / "oellm.yaml",
        """
        defaults:
          - slurm: base
          - backend: bash
          - _self_
        project: {name: root}
        order: [root]
        """,
    )
    write(root / "slurm/base.yaml", "sbatch: {nodes: 1, time: '01:00:00'}\norder: base\n")
    write(
        root / "slurm/big.yaml",
        """
        defaults:
          - base
          - _self_
        sbatch: {nodes: 8}
        """,
    )
    write(root / "slurm/global.yaml", "# @package _global_\nfrom_global: true\n")
    write(root / "backend/bash.yaml", "kind: bash\n")
    write(root / "backend/megatron.yaml", "kind: megatron\nmegatron: {lr: 0.1}\n")
    write(root / "backend/megatron/small.yaml", "num_layers: 2\n")
    write(root / "backend/megatron/fast.yaml", "lr: 0.5\n")
    write(root / "experiments/base.yaml", "vars: {from_base: 1}\n")
    return root


def run(
    lib: Path, text: str, tmp_path: Path, overrides: list[str] | None = None, name: str = "exp.yaml"
) -> dict:
    exp = write(tmp_path / name, text)
    library = Library.for_experiment(exp, [], builtin=lib)
    return compose(library, exp, None, overrides or []).tree


def test_root_supplies_groups_the_experiment_does_not_name(lib: Path, tmp_path: Path) -> None:
    tree = run(lib, "defaults:\n  - /backend: megatron\nproject: {name: e}\n", tmp_path)
    assert tree["backend"] == {"kind": "megatron", "megatron": {"lr": 0.1}}
    assert tree["slurm"]["sbatch"] == {"nodes": 1, "time": "01:00:00"}
    assert tree["project"] == {"name": "e"}


def test_group_files_layer_and_self_order(lib: Path, tmp_path: Path) -> None:
    tree = run(lib, "defaults:\n  - override /slurm: big\n", tmp_path)
    assert tree["slurm"]["sbatch"] == {"nodes": 8, "time": "01:00:00"}


def test_self_first_lets_defaults_win(lib: Path, tmp_path: Path) -> None:
    text = "defaults:\n  - _self_\n  - /slurm/global\nfrom_global: false\n"
    assert run(lib, text, tmp_path)["from_global"] is True
    text2 = "defaults:\n  - /slurm/global\nfrom_global: false\n"
    assert run(lib, text2, tmp_path)["from_global"] is False


def test_option_lists_merge_in_order_under_the_group_package(lib: Path, tmp_path: Path) -> None:
    text = "defaults:\n  - /backend: megatron\n  - /backend/megatron: [small, fast]\n"
    tree = run(lib, text, tmp_path)
    assert tree["backend"]["megatron"] == {"lr": 0.5, "num_layers": 2}


def test_package_global_header_and_optional(lib: Path, tmp_path: Path) -> None:
    text = "defaults:\n  - /slurm/global\n  - optional /slurm: nothing_here\n"
    tree = run(lib, text, tmp_path)
    assert tree["from_global"] is True


def test_a_missing_optional_choice_keeps_the_root_choice(lib: Path, tmp_path: Path) -> None:
    tree = run(lib, "defaults:\n  - optional /slurm: nothing_here\n", tmp_path)
    assert tree["slurm"]["sbatch"] == {"nodes": 1, "time": "01:00:00"}
    assert tree["order"] == ["root"]


def test_an_existing_optional_choice_replaces_the_root_choice(lib: Path, tmp_path: Path) -> None:
    tree = run(lib, "defaults:\n  - optional /slurm: big\n", tmp_path)
    assert tree["slurm"]["sbatch"]["nodes"] == 8


def test_a_missing_optional_group_of_its_own_is_skipped(lib: Path, tmp_path: Path) -> None:
    tree = run(lib, "defaults:\n  - optional /extras: nothing_here\n", tmp_path)
    assert "extras" not in tree and tree["slurm"]["sbatch"]["nodes"] == 1


def test_relative_entries_resolve_against_the_experiment_folder(lib: Path, tmp_path: Path) -> None:
    exp = write(
        lib / "experiments/mine.yaml", "defaults:\n  - base\n  - _self_\nproject: {name: m}\n"
    )
    tree = compose(Library.for_experiment(exp, [], builtin=lib), exp, None, []).tree
    assert tree["vars"] == {"from_base": 1}


def test_config_ref_and_user_dir_shadowing(lib: Path, tmp_path: Path) -> None:
    user = tmp_path / "user"
    write(user / "slurm/base.yaml", "sbatch: {nodes: 2}\n")
    write(user / "experiments/ref.yaml", "project: {name: ref}\n")
    library = Library([user], builtin=lib)
    tree = compose(library, None, "experiments/ref", []).tree
    assert tree["project"]["name"] == "ref"
    assert tree["slurm"]["sbatch"] == {"nodes": 2}


def test_command_line_overrides(lib: Path, tmp_path: Path) -> None:
    tree = run(
        lib,
        "vars: {a: 1, b: 2}\n",
        tmp_path,
        ["vars.a=1e-4", "+vars.c=[1,2]", "~vars.b", "++vars.d=x", "slurm=big", "backend=megatron"],
    )
    assert tree["vars"] == {"a": 0.0001, "c": [1, 2], "d": "x"}
    assert tree["slurm"]["sbatch"]["nodes"] == 8
    assert tree["backend"]["kind"] == "megatron"


@pytest.mark.parametrize(
    ("text", "overrides", "words", "where"),
    [
        (
            "defaults:\n  - /slurm: bigg\n",
            [],
            "unknown option 'bigg' for config group 'slurm'",
            "exp.yaml:2:5",
        ),
        ("defaults:\n  - /nothing/here\n", [], "config 'nothing/here' not found", "exp.yaml:2:5"),
        (
            "defaults:\n  - override /newgroup: x\n",
            [],
            "names a group that nothing chose",
            "exp.yaml:2:5",
        ),
        ("defaults: {a: 1}\n", [], "'defaults' must be a list", "exp.yaml:1:1"),
        ("defaults:\n  - weird /slurm: big\n", [], "unknown defaults keyword", "exp.yaml:2:5"),
        ("vars: {}\n", ["vars.x=1"], "cannot set 'vars.x': no such key", "<command line>:1:1"),
        ("vars: {x: 1}\n", ["+vars.x=1"], "already set", "<command line>:1:1"),
        ("vars: {}\n", ["~vars.y"], "cannot delete", "<command line>:1:1"),
        ("vars: {}\n", ["novalue"], "has no '='", "<command line>:1:1"),
        ("vars: {}\n", ["slurm=nah"], "unknown option 'nah'", "<command line>:1:1"),
        ("# @package slurm\nvars: {}\n", [], "must be '# @package _global_'", "exp.yaml:1:1"),
    ],
)
def test_errors(
    lib: Path, tmp_path: Path, text: str, overrides: list[str], words: str, where: str
) -> None:
    with pytest.raises(ConfigError) as info:
        run(lib, text, tmp_path, overrides)
    (problem,) = info.value.problems
    assert words in problem.message
    assert problem.origin is not None
    assert f"{Path(problem.origin.file).name}:{problem.origin.line}:{problem.origin.col}" == where


def test_defaults_cycle_is_an_error(lib: Path, tmp_path: Path) -> None:
    write(lib / "slurm/loop.yaml", "defaults:\n  - loop2\n")
    write(lib / "slurm/loop2.yaml", "defaults:\n  - loop\n")
    with pytest.raises(ConfigError, match="include each other"):
        run(lib, "defaults:\n  - override /slurm: loop\n", tmp_path)
