"""Proves that tests/slurm/cluster.sh runs a real SLURM: jobs run, end with the right state and
exit code in sacct, and name and comment survive into squeue and sacct. Each test takes a few
seconds at most (sched_interval=1 in slurm.conf).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

DEADLINE_S = 30.0
POLL_S = 0.5
T = TypeVar("T")


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def write_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\n{body}\n")
    return script


def sbatch(tmp_path: Path, body: str, *flags: str) -> str:
    script = write_script(tmp_path, body)
    # SLURM does not create the --output directory; a missing one fails the job with 0:53.
    (tmp_path / "logs" / "nested").mkdir(parents=True, exist_ok=True)
    out = run(
        [
            "sbatch",
            "--parsable",
            f"--chdir={tmp_path}",
            f"--output={tmp_path}/logs/nested/%x_%j.out",
            *flags,
            str(script),
        ]
    ).stdout.strip()
    return out.split(";")[0]  # --parsable prints "id" or "id;cluster"


def sacct_row(job_id: str) -> dict[str, str] | None:
    fields = ["JobID", "JobName", "State", "ExitCode", "Comment"]
    out = run(["sacct", "-X", "-P", "-n", "-j", job_id, f"--format={','.join(fields)}"]).stdout
    for line in out.splitlines():
        values = line.split("|", len(fields) - 1)
        if values[0] == job_id:
            return dict(zip(fields, values, strict=True))
    return None


def finished_row(job_id: str, *, with_name: bool = False) -> dict[str, str]:
    terminal = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")

    def probe() -> dict[str, str] | None:
        row = sacct_row(job_id)
        if row is None or not row["State"].startswith(terminal):
            return None
        # For a job that ended within about a second of its submission, slurmdbd first stores
        # the placeholder JobName "allocation"; the real name follows 2-5 s later (22.05.8).
        if with_name and row["JobName"] == "allocation":
            return None
        return row

    return wait_for(f"job {job_id} to finish in sacct", probe, DEADLINE_S)


def test_job_completes_and_writes_its_file(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    job_id = sbatch(tmp_path, 'echo "ran on $SLURMD_NODENAME" > result.txt', "--job-name=oellm.ok")
    row = finished_row(job_id)
    assert (row["State"], row["ExitCode"]) == ("COMPLETED", "0:0")
    assert (tmp_path / "result.txt").read_text() == f"ran on {slurm_cluster.node}\n"
    assert (tmp_path / "logs" / "nested" / f"oellm.ok_{job_id}.out").exists()


def test_failing_job_ends_failed_with_its_exit_code(tmp_path: Path) -> None:
    job_id = sbatch(tmp_path, "exit 3", "--job-name=oellm.fail", "--partition=batch")
    row = finished_row(job_id)
    assert (row["State"], row["ExitCode"]) == ("FAILED", "3:0")


def test_held_job_shows_name_and_comment(tmp_path: Path) -> None:
    comment = 'oellm bundle=ab12cd34; odd "chars" $(id)'
    job_id = sbatch(tmp_path, "true", "--hold", "--job-name=oellm.held", f"--comment={comment}")
    try:
        out = run(["squeue", "--noheader", "-j", job_id, "--format=%i|%j|%T|%r|%k"]).stdout.strip()
        assert out.split("|", 4) == [job_id, "oellm.held", "PENDING", "JobHeldUser", comment]
    finally:
        run(["scancel", job_id])
    row = finished_row(job_id, with_name=True)
    assert row["State"].startswith("CANCELLED")
    # Needs AccountingStoreFlags=job_comment; sacct shows the comment once the job has ended.
    assert (row["JobName"], row["Comment"]) == ("oellm.held", comment)


def test_test_only_validates_without_submitting(tmp_path: Path) -> None:
    script = write_script(tmp_path, "true")
    ok = run(["sbatch", "--test-only", "--partition=batch", str(script)])
    assert "to start at" in ok.stderr and "in partition batch" in ok.stderr
    bad = run(["sbatch", "--test-only", "--partition=no-such-partition", str(script)], check=False)
    assert bad.returncode != 0
    assert "invalid partition specified" in bad.stderr
