"""The command line in-process: exit codes, messages, help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oellm import __version__
from oellm.cli import main
from tests.helpers import EXAMPLES, write


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_compile_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["compile", str(EXAMPLES / "demo.yaml"), "-o", str(tmp_path / "b")], capsys
    )
    assert (code, err) == (0, "")
    assert "1 job" in out
    lock = json.loads((tmp_path / "b" / "plan.lock.json").read_text())
    assert [j["name"] for j in lock["jobs"]] == ["demo"]
    assert (tmp_path / "b" / "plan.txt").is_file()
    assert (tmp_path / "b" / "jobs" / "demo.sbatch").is_file()


def test_config_ref_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        [
            "compile",
            "--config-ref",
            "experiments/megatron_tiny",
            "-o",
            str(tmp_path / "b"),
            "backend.megatron.lr=2e-4",
            "+vars.note=hi",
            "~backend.megatron.bf16",
        ],
        capsys,
    )
    assert (code, err) == (0, "")
    script = (tmp_path / "b" / "jobs" / "megatron_tiny.sbatch").read_text()
    assert "--lr 0.0002" in script and "--bf16" not in script


def test_user_error_is_one_line_with_position_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write(
        tmp_path / "exp.yaml",
        "defaults:\n  - /backend: megatron\nproject: {name: x}\n"
        "backend:\n  megatron:\n    lrr: 1\n",
    )
    code, out, err = run(["compile", str(exp), "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and out == ""
    assert err == (
        f"{exp}:6:5: backend.megatron: unknown argument 'lrr'\n  hint: did you mean 'lr'?\n"
    )
    assert "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_missing_file_and_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["compile", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run(["compile", str(EXAMPLES / "demo.yaml")], capsys)
    assert code == 2 and "--output" in err


def test_internal_errors_exit_3_with_a_crash_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr("oellm.compiler.pipeline.compile_bundle", boom)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code, _, err = run(["compile", str(EXAMPLES / "demo.yaml"), "-o", str(tmp_path / "b")], capsys)
    assert code == 3
    assert "internal error: RuntimeError: kaboom" in err and "Traceback" not in err
    (log,) = tmp_path.glob("oellm-crash-*.log")
    assert "Traceback" in log.read_text()


def test_help_explains_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["compile", "--help"], capsys)
    assert code == 0
    for words in ("+new.key=1", "~drop.key", "slurm=leonardo", "--config-ref", "--config-dir"):
        assert words in out


def test_log_level_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    monkeypatch.setenv("OELLM_LOG_LEVEL", "INFO")
    run(["compile", str(EXAMPLES / "demo.yaml"), "-o", str(tmp_path / "b")], capsys)
    assert logging.getLogger().level == logging.INFO
    run(["--debug", "compile", str(EXAMPLES / "demo.yaml"), "-o", str(tmp_path / "b")], capsys)
    assert logging.getLogger().level == logging.DEBUG


def _closed_early(args: list[str]) -> tuple[int, str]:
    """Run `oellm ARGS`, read one line of its output, then close the pipe (as `| head -1`
    does); return its exit status and what it wrote to stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "oellm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    exp = write(
        tmp_path / "exp.yaml",
        """
        project: {name: pipe}
        job: {name: "p_${vars.i}_${vars.j}"}
        vars: {i: 0, j: 0}
        backend: {bash: {command: "true"}}
        sweep:
          type: product
          params: {vars.i: VALUES, vars.j: [0, 1, 2, 3, 4]}
        """.replace("VALUES", str(list(range(400)))),
    )
    bundle = tmp_path / "b"
    assert main(["compile", str(exp), "-o", str(bundle)]) == 0
    # 2,000 rows: more than a pipe buffer holds, so the writer meets the closed pipe.
    for args in (
        ["status", str(bundle), "--scheduler", "local"],
        ["reconcile", str(bundle), "--dry-run", "--scheduler", "local"],
    ):
        code, err = _closed_early(args)
        assert (code, err) == (0, ""), args
