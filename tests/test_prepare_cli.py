"""`oellm prepare`: a compiled bundle becomes submittable by hand with plain `sbatch`.

The in-process tests check the folders, the messages and the exit codes; the `slurm` ones
submit the demo by hand to the real local SLURM, once without `prepare` (SLURM cannot open the
log, the job fails and writes nothing) and once with it (the log holds the demo's output).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from oellm.cli import main
from tests.helpers import EXAMPLES, write

DEMO = EXAMPLES / "demo.yaml"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
JOB_DEADLINE_S = 90.0


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    """The demo compiled to `tmp_path/bundle`, with its default `./output` beside it."""
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run(["compile", str(DEMO), "-o", "bundle"], capsys)[0] == 0
    return tmp_path / "bundle"


def test_prepare_creates_the_log_and_output_folders(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not (demo.parent / "output").exists()
    code, out, err = run(["prepare", "bundle"], capsys)
    assert (code, err) == (0, "")
    assert (demo.parent / "output" / "demo").is_dir()
    assert out.splitlines() == [
        "created output/demo",
        "submit by hand from this folder: relative paths in the bundle start there",
    ]


def test_prepare_is_idempotent(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["prepare", "bundle"], capsys)[0] == 0
    code, out, _ = run(["prepare", "bundle"], capsys)
    assert code == 0
    assert "created" not in out and "every job's folders exist already" in out


def test_paths_are_relative_to_the_folder_holding_the_bundle(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _ = run(["prepare", str(demo)], capsys)
    assert code == 0
    assert (tmp_path / "output" / "demo").is_dir() and not (elsewhere / "output").exists()
    assert f"created {tmp_path / 'output' / 'demo'}" in out
    assert f"submit by hand from {tmp_path}:" in out


def test_a_sweep_gets_every_jobs_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    exp = write(
        tmp_path / "exp.yaml",
        """
        project:
          name: p
          output_dir: runs
        vars:
          n: 0
        backend:
          bash:
            command: "true"
        sweep:
          base_values:
            project.name: 'p_\\${vars.n}'
            job.log_path: 'logs/\\${vars.n}/slurm-%j.log'
          grids:
            - vars.n: [1, 2]
        """,
    )
    assert run(["compile", str(exp), "-o", "b"], capsys)[0] == 0
    code, out, _ = run(["prepare", "b"], capsys)
    assert code == 0, out
    created = sorted(line.removeprefix("created ") for line in out.splitlines()[:-1])
    assert created == ["logs/1", "logs/2", "runs/p_1", "runs/p_2"]


def test_a_folder_that_cannot_be_created_is_exit_2_naming_it(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (demo.parent / "output").write_text("a file where a folder must go\n")
    code, out, err = run(["prepare", "bundle"], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {demo.parent / 'output' / 'demo'}: cannot create the folder")
    assert "hint:" in err and "Traceback" not in err


def test_not_a_bundle_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["prepare", str(tmp_path)], capsys)
    assert code == 2 and "holds no plan.lock.json" in err


# --- by hand on the real SLURM ------------------------------------------------------------


def _sh(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OUTPUT_DIR"}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _oellm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import sys

    return _sh([sys.executable, "-m", "oellm", *args], cwd)


def _final_state(job_id: str, cwd: Path) -> str:
    deadline = time.monotonic() + JOB_DEADLINE_S
    while time.monotonic() < deadline:
        listed = _sh(["sacct", "-X", "-P", "-n", "-j", job_id, "--format=JobID,State"], cwd)
        for line in listed.stdout.splitlines():
            found, _, state = line.partition("|")
            if found == job_id and state.startswith(TERMINAL):
                return state
        time.sleep(1)
    pytest.fail(f"job {job_id} did not finish within {JOB_DEADLINE_S:.0f}s")


def _submit_by_hand(folder: Path) -> str:
    """`sbatch bundle/jobs/demo.sbatch` from the folder that holds the bundle, as the README
    says; the job id."""
    done = _sh(["sbatch", "--parsable", "bundle/jobs/demo.sbatch"], folder)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_by_hand_without_prepare_the_job_fails_without_a_log(tmp_path: Path) -> None:
    assert _oellm("compile", str(DEMO), "-o", "bundle", cwd=tmp_path).returncode == 0
    job_id = _submit_by_hand(tmp_path)
    try:
        assert _final_state(job_id, tmp_path) == "FAILED"
    finally:
        _sh(["scancel", job_id], tmp_path)
    assert not (tmp_path / "output").exists()


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_by_hand_after_prepare_the_job_runs_and_logs(tmp_path: Path) -> None:
    assert _oellm("compile", str(DEMO), "-o", "bundle", cwd=tmp_path).returncode == 0
    prepared = _oellm("prepare", "bundle", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    job_id = _submit_by_hand(tmp_path)
    try:
        assert _final_state(job_id, tmp_path) == "COMPLETED"
    finally:
        _sh(["scancel", job_id], tmp_path)
    log = (tmp_path / "output" / "demo" / f"slurm-{job_id}.log").read_text()
    assert "hello from demo on " in log and log.rstrip().endswith("done")
    assert (tmp_path / "output" / "demo" / ".oellm" / f"{job_id}.exit").read_text() == "0\n"
