"""SlurmScheduler against the real local SLURM (tests/slurm/cluster.sh): submit by tag, see the
job through squeue and sacct to its end, cancel, and fail as "unavailable" while slurmctld is
stopped. Every test uses its own tag prefix, so jobs of other tests never match.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest

from oellm.reconciler import tags
from oellm.reconciler.errors import SchedulerUnavailable
from oellm.reconciler.schedulers import FINISHED, SchedulerJob, Submission
from oellm.reconciler.schedulers.slurm import SlurmScheduler, available
from tests.helpers import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

CLUSTER_SH = Path(__file__).resolve().parents[1] / "slurm" / "cluster.sh"
DEADLINE_S = 60.0
POLL_S = 0.5
T = TypeVar("T")


@pytest.fixture
def prefix() -> str:
    return tags.prefix(uuid.uuid4().hex[:8])


@pytest.fixture
def since() -> datetime:
    # An aware time: the scheduler converts it to the local time sacct expects.
    return datetime.now(timezone.utc) - timedelta(minutes=1)


@pytest.fixture
def scheduler() -> Iterator[SlurmScheduler]:
    yield SlurmScheduler(submit_timeout=30, query_timeout=30, cancel_timeout=30)


def submit(scheduler: SlurmScheduler, workdir: Path, tag: str, body: str, *extra: str) -> str:
    """A script with a relative --output, submitted by its relative path from `workdir`."""
    (workdir / "logs").mkdir(exist_ok=True)  # SLURM does not create it (a missing one: 0:53)
    (workdir / "job.sh").write_text(f"#!/bin/bash\n#SBATCH --output=logs/%x_%j.out\n{body}\n")
    return scheduler.submit(
        Submission(script=Path("job.sh"), tag=tag, workdir=workdir, extra_args=extra)
    )


def the_job(jobs: list[SchedulerJob], job_id: str) -> SchedulerJob | None:
    rows = [job for job in jobs if job.job_id == job_id]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def accounted_end(
    scheduler: SlurmScheduler, tag: str, job_id: str, since: datetime, known: bool = False
) -> SchedulerJob:
    """The job once its end is known from sacct (squeue has no exit code)."""

    def probe() -> SchedulerJob | None:
        job = the_job(scheduler.query(tag, since, known_ids=[job_id] if known else ()), job_id)
        if job is not None and job.source == "accounting" and job.state in FINISHED:
            return job
        return None

    return wait_for(f"job {job_id} to end in sacct", probe, DEADLINE_S)


def test_slurm_is_available_here() -> None:
    assert available()


def test_job_completes_with_its_file_and_log(
    scheduler: SlurmScheduler, tmp_path: Path, prefix: str, since: datetime
) -> None:
    tag = prefix + "ok.0"
    job_id = submit(scheduler, tmp_path, tag, "echo hello > result.txt\necho logged")
    assert job_id.isdigit()
    job = accounted_end(scheduler, prefix, job_id, since)
    assert (job.name, job.state, job.exit_code, job.signal) == (tag, "COMPLETED", 0, 0)
    assert job.end is not None and job.nodes is not None
    assert (tmp_path / "result.txt").read_text() == "hello\n"
    # `%x` is the job name SLURM was given: the job first, then the key.
    assert tags.job_name(tag).startswith("ok.0@oellm.")
    assert (tmp_path / "logs" / f"{tags.job_name(tag)}_{job_id}.out").read_text() == "logged\n"


def test_failing_job_is_failed_with_its_exit_code(
    scheduler: SlurmScheduler, tmp_path: Path, prefix: str, since: datetime
) -> None:
    job_id = submit(scheduler, tmp_path, prefix + "fail.0", "exit 3")
    job = accounted_end(scheduler, prefix, job_id, since)
    assert (job.state, job.raw_state, job.exit_code, job.signal) == ("FAILED", "FAILED", 3, 0)


def test_held_job_is_pending_then_cancelled(
    scheduler: SlurmScheduler, tmp_path: Path, prefix: str, since: datetime
) -> None:
    tag = prefix + "held.0"
    job_id = submit(scheduler, tmp_path, tag, "true", "--hold")
    try:
        (pending,) = scheduler.query(prefix, since)
        assert (pending.job_id, pending.name, pending.state) == (job_id, tag, "PENDING")
        assert (pending.reason, pending.source) == ("JobHeldUser", "queue")
    finally:
        scheduler.cancel([job_id])
    # Cancelled within a second of submission: sacct may show the name "allocation" for a few
    # seconds; the known id (and squeue's name) still find it.
    job = accounted_end(scheduler, prefix, job_id, since, known=True)
    assert (job.name, job.state) == (tag, "CANCELLED")
    assert job.raw_state.startswith("CANCELLED by ")
    scheduler.cancel([job_id])  # finished: no error


def test_query_for_an_unused_prefix_is_empty(scheduler: SlurmScheduler, since: datetime) -> None:
    assert scheduler.query(f"oellm.none{uuid.uuid4().hex}.", since) == []
    assert scheduler.query(f"oellm.none{uuid.uuid4().hex}.", None) == []


def cluster(command: str) -> None:
    subprocess.run(["bash", str(CLUSTER_SH), command], check=True, timeout=120)


def test_controller_down_is_unavailable(tmp_path: Path, prefix: str, since: datetime) -> None:
    # sbatch, squeue and scancel retry about 9 s before "Unable to contact slurm controller".
    scheduler = SlurmScheduler(submit_timeout=30, query_timeout=30, cancel_timeout=3)
    cluster("stop-ctld")
    try:
        started = time.monotonic()
        with pytest.raises(SchedulerUnavailable, match="Unable to contact slurm controller"):
            submit(scheduler, tmp_path, prefix + "down.0", "true")
        with pytest.raises(SchedulerUnavailable, match="Unable to contact slurm controller"):
            scheduler.query(prefix, since)
        with pytest.raises(SchedulerUnavailable, match="no answer within 3 s"):
            scheduler.cancel(["999999"])
        assert time.monotonic() - started < 45
    finally:
        cluster("start-ctld")
    assert scheduler.query(prefix, since) == []
