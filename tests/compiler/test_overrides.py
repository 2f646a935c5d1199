"""Command-line overrides read as Hydra's grammar reads them, or refused with a hint; and
Hydra's experiment pattern (`+experiment=e1` whose file overrides other groups)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oellm.cli import main
from oellm.compiler.compose import compose
from oellm.compiler.errors import ConfigError
from oellm.compiler.grammar import GrammarError, decode
from oellm.compiler.library import Library
from tests.helpers import compile_file, write

EXPERIMENT = """
# @package _global_
project: {name: demo}
backend:
  bash: {command: "true"}
vars: {a: 1}
"""


def composed(tmp_path: Path, overrides: list[str], text: str = EXPERIMENT) -> dict[str, Any]:
    exp = write(tmp_path / "exp.yaml", text)
    return compose(Library.for_experiment(exp, []), exp, None, overrides).tree


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{a:1,b:2}", {"a": 1, "b": 2}),
        ("{a: 1, b: {c: [x, 'y z']}}", {"a": 1, "b": {"c": ["x", "y z"]}}),
        ("[1,2]", [1, 2]),
        ("[]", []),
        ("{}", {}),
        ("'a b'", "a b"),
        ('"a b"', "a b"),
        ("'1,2'", "1,2"),
        ("'it\\'s'", "it's"),
        ("a b", "a b"),
        ("1e-4", 0.0001),
        ("1_000", 1000),
        ("-3", -3),
        ("TRUE", True),
        ("null", None),
        ("01", "01"),
        ("10:00:00", "10:00:00"),
        ("0-1:0:0", "0-1:0:0"),
        ("yes", "yes"),
        ("job\\{a\\=1\\,b\\}", "job{a=1,b}"),
        ("/data/x.bin", "/data/x.bin"),
        ("", ""),
    ],
)
def test_values_follow_hydras_grammar(tmp_path: Path, value: str, expected: Any) -> None:
    assert composed(tmp_path, [f"+vars.x={value}"])["vars"]["x"] == expected


def test_interpolations_are_kept_for_the_resolver(tmp_path: Path) -> None:
    tree = composed(tmp_path, ["+vars.x=${vars.a}", "+vars.y='n=${vars.a}'"])
    assert tree["vars"]["x"] == "${vars.a}"
    assert tree["vars"]["y"] == "n=${vars.a}"
    bundle = compile_file(
        write(tmp_path / "e.yaml", EXPERIMENT),
        ["+vars.x=${vars.a}", "backend.bash.command='echo ${vars.x}'"],
    )
    assert "oellm_command='echo 1'" in bundle.files["jobs/demo.sbatch"].decode()


@pytest.mark.parametrize(
    ("override", "message", "col", "hint"),
    [
        ("+vars.x=1,2", "a comma-separated value is a sweep in Hydra", 10, "x='1,2'"),
        ("+vars.x=a #b", "'#' cannot stand unquoted", 11, "quote the value"),
        ("+vars.x=choice(1,2)", "is a Hydra function", 9, "sweep:"),
        ("+vars.x=[1,2", "'[' is never closed", 13, "add ']'"),
        ("+vars.x=it's", "a quote (') inside an unquoted value", 11, "quote the whole value"),
        ("+vars.x='a'b", "a quoted string must be the whole value", 12, None),
        ("+vars.x=inf", "is a float in Hydra's grammar", 9, "quote it"),
        ("+vars.x=ä", "'ä' cannot stand unquoted", 9, "quote the value"),
    ],
)
def test_what_hydra_refuses_or_reads_otherwise_is_refused(
    tmp_path: Path, override: str, message: str, col: int, hint: str | None
) -> None:
    with pytest.raises(ConfigError) as caught:
        composed(tmp_path, [override])
    (problem,) = caught.value.problems
    assert message in problem.message
    assert override in problem.message
    assert problem.origin is not None
    assert (problem.origin.file, problem.origin.line, problem.origin.col) == (
        "<command line>",
        1,
        col,
    )
    if hint is not None:
        assert problem.hint is not None and hint in problem.hint


def test_the_column_counts_earlier_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        composed(tmp_path, ["vars.a=2", "+vars.x=1,2"])
    (problem,) = caught.value.problems
    assert problem.origin is not None and problem.origin.col == 10 + 9


def test_a_sweep_on_the_command_line_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(tmp_path / "exp.yaml", EXPERIMENT)
    code = main(["compile", str(exp), "-o", str(tmp_path / "b"), "vars.a=1,2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "<command line>:1:9: override 'vars.a=1,2': a comma-separated value" in err
    assert "oellm sweeps live in the `sweep:` section" in err
    assert "Traceback" not in err


def test_delete_with_a_value_checks_the_value(tmp_path: Path) -> None:
    assert "a" not in composed(tmp_path, ["~vars.a=1"])["vars"]
    with pytest.raises(ConfigError, match="its value is 1, not 2"):
        composed(tmp_path, ["~vars.a=2"])


def test_decode_reads_the_same_grammar() -> None:
    assert decode("3308") == 3308
    assert decode("[host1, host2]") == ["host1", "host2"]
    assert decode("{a: b}") == {"a": "b"}
    assert decode("1e-3") == 0.001
    assert decode("'Hello, world!'") == "Hello, world!"
    with pytest.raises(GrammarError):
        decode("a,b")


# --- Hydra's experiment pattern ---


def experiment_library(tmp_path: Path) -> Path:
    write(tmp_path / "vars/db/mysql.yaml", "driver: mysql\nport: 3306\n")
    write(tmp_path / "vars/db/pg.yaml", "driver: pg\nport: 5432\n")
    write(
        tmp_path / "experiment/e1.yaml",
        """
        # @package _global_
        defaults:
          - override /vars/db: pg
          - override /backend: megatron
        project: {name: e1}
        vars: {note: from_e1}
        """,
    )
    return write(
        tmp_path / "exp.yaml",
        """
        # @package _global_
        defaults:
          - /vars/db: mysql
          - _self_
        project: {name: base}
        backend:
          bash: {command: "true"}
        vars: {note: plain}
        """,
    )


def test_plus_experiment_selects_a_global_file_whose_overrides_apply(tmp_path: Path) -> None:
    exp = experiment_library(tmp_path)
    result = compose(Library.for_experiment(exp, []), exp, None, ["+experiment=e1"])
    assert result.tree["vars"]["db"] == {"driver": "pg", "port": 5432}
    assert result.tree["vars"]["note"] == "from_e1"
    assert result.tree["project"]["name"] == "e1"
    assert result.tree["backend"]["kind"] == "megatron"
    assert result.choices["vars/db"] == ["pg"]
    assert result.choices["backend"] == ["megatron"]
    assert result.choices["experiment"] == ["e1"]


def test_the_command_line_still_wins_over_the_experiments_overrides(tmp_path: Path) -> None:
    exp = experiment_library(tmp_path)
    result = compose(Library.for_experiment(exp, []), exp, None, ["+experiment=e1", "backend=bash"])
    assert result.tree["backend"]["kind"] == "bash"
    assert result.tree["vars"]["db"]["driver"] == "pg"


def test_an_experiment_overriding_a_group_nobody_chose_is_an_error(tmp_path: Path) -> None:
    exp = experiment_library(tmp_path)
    write(tmp_path / "experiment/bad.yaml", "# @package _global_\ndefaults:\n  - override /x: y\n")
    with pytest.raises(ConfigError, match="'override /x' names a group that nothing chose"):
        compose(Library.for_experiment(exp, []), exp, None, ["+experiment=bad"])
