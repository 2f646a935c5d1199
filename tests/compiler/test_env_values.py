"""An env value holding `$NAME` or `${NAME}` would reach the job unexpanded: refused, with the
two ways to say what was meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compiler.hostile import run_script
from tests.helpers import compile_error, compile_file, write

DEMO = """
# @package _global_
project: {name: demo}
backend:
  bash: {command: 'echo "$OELLM_X"'}
"""


@pytest.mark.parametrize(
    ("section", "value", "reference", "variable"),
    [
        ("slurm", '"$HOME/cache"', "$HOME", "HOME"),
        ("slurm", "'/opt/lib:\\${LD_LIBRARY_PATH}'", "${LD_LIBRARY_PATH}", "LD_LIBRARY_PATH"),
        ("backend", "'a \\${USER:-me}'", "${USER:-me}", "USER"),
        ("container", "$PATH", "$PATH", "PATH"),
    ],
)
def test_shell_syntax_in_an_env_value_is_refused(
    tmp_path: Path, section: str, value: str, reference: str, variable: str
) -> None:
    extra = {
        "slurm": f"slurm:\n  env:\n    OELLM_X: {value}\n",
        "backend": f"  env:\n    OELLM_X: {value}\n",
        "container": f"container:\n  image: /i.sif\n  env:\n    OELLM_X: {value}\n",
    }[section]
    path = write(tmp_path / "exp.yaml", DEMO + extra)
    (problem,) = compile_error(path).problems
    assert problem.key == f"{section}.env.OELLM_X"
    assert problem.message.startswith(f"{reference} would reach the job as the literal text")
    assert problem.origin is not None
    assert problem.origin.line == {"slurm": 7, "backend": 6, "container": 8}[section]
    assert problem.hint is not None
    assert f"${{oc.env:{variable}}}" in problem.hint and "slurm.setup" in problem.hint


def test_the_two_ways_out_work(tmp_path: Path) -> None:
    from_compile = write(
        tmp_path / "a.yaml", DEMO + "slurm:\n  env:\n    OELLM_X: ${oc.env:SRC}/cache\n"
    )
    script = compile_file(from_compile, env={"SRC": "/data"}).files["jobs/demo.sbatch"]
    assert b"export OELLM_X=/data/cache\n" in script
    at_run_time = write(
        tmp_path / "b.yaml",
        DEMO + "slurm:\n  setup:\n    - 'export OELLM_X=\"$OELLM_BASE/cache\"'\n",
    )
    script = compile_file(at_run_time).files["jobs/demo.sbatch"]
    assert b'export OELLM_X="$OELLM_BASE/cache"\n' in script


@pytest.mark.parametrize("value", ["'$(id)'", "'a$'", "'cost: 5$'", "'$1'"])
def test_dollar_without_a_variable_name_passes(tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "exp.yaml", DEMO + f"slurm:\n  env:\n    OELLM_X: {value}\n")
    compile_file(path)


def test_a_quoted_reference_arrives_unexpanded(tmp_path: Path) -> None:
    """Why the check exists: a quoted `$HOME` reaches the program as five characters."""
    path = write(tmp_path / "exp.yaml", DEMO + "slurm:\n  env:\n    OELLM_X: plain\n")
    script = compile_file(path).files["jobs/demo.sbatch"].decode()
    script = script.replace("export OELLM_X=plain", "export OELLM_X='$HOME'")
    run = run_script(script.encode(), tmp_path / "run")
    assert run.returncode == 0
    assert run.env("srun")[b"OELLM_X"] == b"$HOME"
