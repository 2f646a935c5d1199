"""Jobs recovered from the real local SLURM long after they ended end as SLURM says, not LOST.

A round that finds a submission of a job with no record writes the attempt's record from SLURM
(`changes._recovered`); later rounds ask sacct only from the oldest attempt in flight on, minus
`observe.LOOKBACK_MARGIN`, and sacct `-S` lists no job that ended before that. Here the margin
is 2 s, so that a job is "old" once squeue has forgotten it (MinJobAge, 30 s on this cluster):
the same as a job recovered a day after it ended with the real margin of 10 minutes.

The rounds after the first submission run in this process (the margin is patched); the first
one runs as cron would, as a separate `oellm` process. A job recovered while it still runs and
ends later is recorded as it ended too.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from oellm.reconciler import observe
from oellm.reconciler.reconcile import reconcile_once
from oellm.reconciler.schedulers import FINISHED, row_time
from oellm.reconciler.session import Session
from tests.helpers import wait_for
from tests.reconciler.slurm_helpers import compile_to
from tests.reconciler.test_never_twice_slurm import (
    cancel_under,
    reconcile,
    state_dir,
    submissions,
    submitted,
)

pytestmark = pytest.mark.slurm

MARGIN = timedelta(seconds=2)

# Each a bundle of its own: a job, an array of two tasks, a chain of two links (all quick),
# and a job still running when it is recovered.
EXPERIMENTS = {
    "single": """
        project: {name: rw_single}
        backend: {bash: {command: "echo done"}}
    """,
    "array": """
        project: {name: rw_array}
        stage: train
        job: {name: "rw_t_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {array: true}
        sweep:
          params: {vars.i: [0, 1]}
    """,
    "chain": """
        project: {name: rw_chain}
        job: {chain_repeat: 2}
        backend: {bash: {command: "echo link $SLURM_JOB_ID"}}
    """,
    "late": """
        project: {name: rw_late}
        backend: {bash: {command: "sleep 75; echo done"}}
    """,
}
QUICK = ("single", "array", "chain")


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object, tmp_path: Path) -> Iterator[None]:
    yield
    cancel_under(tmp_path)


def job_ids(bundle: Path) -> dict[str, list[str]]:
    """job -> the SLURM ids its records name (a chain: every link's; the first is also the
    attempt's)."""
    read = Session(bundle, "slurm").records.load().read()
    return {
        job: sorted(
            {
                job_id
                for attempt in attempts
                for job_id in (attempt.job_id, *(link.job_id for link in attempt.links))
                if job_id
            }
        )
        for job, attempts in read.items()
    }


def queued(ids: Iterable[str]) -> set[str]:
    """The ids of `ids` squeue still lists (finished ones stay for MinJobAge)."""
    listed = subprocess.run(
        ["squeue", "--me", "-t", "all", "-h", "-o", "%i"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return set(ids) & set(listed.stdout.split())


def ends(ids: Iterable[str]) -> dict[str, tuple[str, datetime | None]]:
    """id -> (state, end) as sacct has it."""
    done = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", ",".join(sorted({i.split("_")[0] for i in ids})),
         "--format=JobID,State,End"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found: dict[str, tuple[str, datetime | None]] = {}
    for line in done.stdout.splitlines():
        job_id, state, end = line.split("|")
        found[job_id] = (state.split(" ")[0], row_time(end))
    return {job_id: found[job_id] for job_id in ids if job_id in found}


def forgotten(ids: list[str]) -> bool:
    """Ended in accounting and no longer in squeue: only sacct can tell of them now."""
    acct = ends(ids)
    ended = len(acct) == len(set(ids)) and all(state in FINISHED for state, _ in acct.values())
    return ended and not queued(ids)


def rounds(bundle: Path, count: int) -> list[str]:
    said: list[str] = []
    for _ in range(count):
        reconcile_once(Session(bundle, "slurm"), False, said.append)
    return said


def outcomes(bundle: Path) -> dict[str, tuple[str, str | None]]:
    read = Session(bundle, "slurm").records.load().read()
    return {job: (a[-1].phase, a[-1].final_state) for job, a in read.items()}


def test_jobs_recovered_long_after_they_ended_are_recorded_as_they_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundles = {name: compile_to(tmp_path / name, text) for name, text in EXPERIMENTS.items()}
    for bundle in bundles.values():
        assert submitted(reconcile(bundle, codes=(1,)))
    ids = {name: job_ids(bundle) for name, bundle in bundles.items()}
    quick = [i for name in QUICK for found in ids[name].values() for i in found]
    (late,) = ids["late"]["rw_late"]
    wait_for("the quick jobs to end and leave squeue", lambda: forgotten(quick), 120, 2)
    assert queued([late]), "the late job still runs when it is recovered"
    before = submissions(tmp_path)

    # Everything of the quick bundles is gone (bundle, outputs, records) and compiled again
    # in the same folders, so the state dir and the tag key are the same; the late job's
    # records alone are gone.
    for name in QUICK:
        shutil.rmtree(tmp_path / name)
        bundles[name] = compile_to(tmp_path / name, EXPERIMENTS[name])
    shutil.rmtree(state_dir(bundles["late"]))
    monkeypatch.setattr(observe, "LOOKBACK_MARGIN", MARGIN)
    recovering = datetime.now(timezone.utc)
    for job_id, (_, end) in ends(quick).items():
        assert end is not None and end < recovering - MARGIN, f"job {job_id} ended at {end}"

    for name, bundle in bundles.items():
        said = rounds(bundle, 1)
        recovered = sorted(line.split()[1] for line in said if line.startswith("recovered "))
        assert recovered == sorted(ids[name]), said
        assert not any(line.startswith("submitted ") for line in said), said
    # UNSEEN_LIMIT rounds and one more: an attempt that is not seen would be LOST by now.
    for name in QUICK:
        said = rounds(bundles[name], 4)
        assert not any(line.startswith("submitted ") for line in said), said
        completed = {job: ("finished", "COMPLETED") for job in ids[name]}
        assert outcomes(bundles[name]) == completed, said

    wait_for("the late job to end and leave squeue", lambda: forgotten([late]), 150, 2)
    said = rounds(bundles["late"], 4)
    assert outcomes(bundles["late"]) == {"rw_late": ("finished", "COMPLETED")}, said
    assert submissions(tmp_path) == before, "no job was submitted again"
