"""`oellm megatron-args`: a fork's argument parser read with ast into the argument table and
schema, and `oellm compile --config-dir` checking `backend.megatron` against them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oellm.cli import main
from oellm.compiler.megatron import megatron_dests
from oellm.megatron_args import read_table
from tests.helpers import write

FORK = Path(__file__).parent / "megatron_fork" / "arguments.py"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_holds_each_argument_as_argparse_would_take_it() -> None:
    table = read_table(FORK.read_text(), str(FORK))
    by_dest = {e["dest"]: e for e in table.arguments}
    assert sorted(by_dest) == [
        "add_bias_linear",
        "bf16",
        "cp_comm_type",
        "data_cache_path",
        "eval_iters",
        "fork_curriculum",
        "fork_lr_scale",
        "hidden_size",
        "load",
        "lr",
        "num_layers",
        "position_embedding_type",
        "save",
        "use_distributed_optimizer",
    ]
    assert by_dest["num_layers"] == {
        "action_type": "store",
        "arg_type": "int",
        "choices": None,
        "const": None,
        "default": None,
        "dest": "num_layers",
        "element_type": None,
        "nargs": None,
        "option_strings": ["--num-layers"],
    }
    bias = by_dest["add_bias_linear"]
    assert (bias["action_type"], bias["default"], bias["option_strings"]) == (
        "store_false",
        True,
        ["--disable-bias-linear"],
    )
    assert by_dest["bf16"]["action_type"] == "store_true" and by_dest["bf16"]["default"] is False
    cp = by_dest["cp_comm_type"]
    assert (cp["nargs"], cp["arg_type"], cp["element_type"], cp["choices"], cp["default"]) == (
        "+",
        "list",
        "str",
        ["p2p", "a2a"],
        ["p2p"],
    )
    optional = by_dest["use_distributed_optimizer"]
    assert optional["option_strings"] == [
        "--use-distributed-optimizer",
        "--no-use-distributed-optimizer",
    ]
    assert (optional["nargs"], optional["action_type"]) == (0, "store")
    # A default computed at run time is unknown; a negative literal is read.
    assert by_dest["data_cache_path"]["default"] is None
    assert by_dest["data_cache_path"]["arg_type"] == "str"
    assert by_dest["eval_iters"]["default"] == -1
    assert by_dest["fork_curriculum"]["choices"] == ["easy", "hard"]
    assert [(s.what, s.why) for s in table.skipped] == [
        ("--log-dirs", "action 'append' has no form in the argument table")
    ]
    assert len(table.factories) == 1


def test_compile_checks_against_a_forks_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fork = tmp_path / "fork"
    code, out, err = run(["megatron-args", "--from", str(FORK), "--output", str(fork)], capsys)
    assert code == 0, err
    assert "14 arguments" in out and "left out" in out and "ArgumentGroupFactory" in out
    schema = json.loads((fork / "megatron.schema.json").read_text())
    assert schema["properties"]["fork_lr_scale"]["x-megatron"]["flag"] == "--fork-lr-scale"
    exp = write(
        tmp_path / "exp.yaml",
        """
        defaults:
          - /backend: megatron
        project: {name: fork}
        backend:
          megatron: {num_layers: 2, fork_lr_scale: 2.5, fork_curriculum: hard}
        """,
    )
    # The shipped arguments do not know the fork's.
    code, _, err = run(["compile", str(exp), "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and "fork_lr_scale" in err
    code, _, err = run(
        ["compile", str(exp), "--config-dir", str(fork), "-o", str(tmp_path / "b")], capsys
    )
    assert code == 0, err
    script = (tmp_path / "b" / "jobs" / "fork.sbatch").read_text()
    assert "--fork-lr-scale 2.5" in script and "--fork-curriculum hard" in script
    # Values are checked against the fork's choices.
    code, _, err = run(
        [
            "compile",
            str(exp),
            "--config-dir",
            str(fork),
            "-o",
            str(tmp_path / "c"),
            "backend.megatron.fork_curriculum=medium",
        ],
        capsys,
    )
    assert code == 2 and "medium" in err
    # Afterwards the shipped schema is in force again.
    assert "fork_lr_scale" not in megatron_dests() and "lr_decay_style" in megatron_dests()


def test_a_broken_schema_in_a_config_dir_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fork").mkdir()
    (tmp_path / "fork" / "megatron.schema.json").write_text('{"properties": {"x": {}}}')
    exp = write(tmp_path / "exp.yaml", "defaults:\n  - /backend: megatron\nproject: {name: f}\n")
    code, _, err = run(
        ["compile", str(exp), "--config-dir", str(tmp_path / "fork"), "-o", str(tmp_path / "b")],
        capsys,
    )
    assert code == 2 and "megatron.schema.json" in err and "oellm megatron-args" in err


def test_a_folder_without_megatron_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["megatron-args", "--from", str(tmp_path)], capsys)
    assert code == 2 and "Megatron-LM checkout" in err and "Traceback" not in err
