"""`slurm.array: true` on the real local SLURM: the members of an array go as one
`sbatch --array`, each keeps its own `current_<index>.log`, a failed task is restarted alone
as its index, and a reconcile killed in the middle of an array submission adopts every task
by its index instead of submitting the array again."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from oellm.reconciler import tags
from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.records import BATCH_MIN
from tests.reconciler.slurm_helpers import (
    cancel_prefix,
    compile_to,
    ledger,
    oellm,
    status_rows,
    tag_prefix,
)

pytestmark = pytest.mark.slurm

# Task 1 fails its first attempt; the others succeed at once.
ARRAY = """
project: {name: arr}
stage: train
job:
  name: "t_${vars.i}"
  restart: {on: [FAILED], max_attempts: 3}
vars: {i: 0}
backend:
  bash:
    command: |
      echo "job t_${vars.i} is task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"
      n=$(( $(cat "${job.base_output_dir}/count" 2>/dev/null || echo 0) + 1 ))
      echo "$n" > "${job.base_output_dir}/count"
      [ "${vars.i}" != 1 ] || [ "$n" -ge 2 ]
slurm: {array: true, array_throttle: 2, sbatch: {time: 1}}
sweep:
  params: {vars.i: [0, 1, 2]}
"""


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> None:
    return None


def sacct_rows(prefix: str, expect: int) -> list[tuple[str, str]]:
    """(job id, tag) of our jobs in accounting, polled until `expect` rows show (slurmdbd
    lags, and names a just-ended job `allocation` for a few seconds)."""
    end = time.monotonic() + 30
    while True:
        done = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-S", "now-1hour", "-E", "now", "-s",
             "CA,CD,F,PD,R,TO", "--format=JobID,JobName"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        rows = [
            (job_id, tags.tag_of(name))
            for job_id, _, name in (line.partition("|") for line in done.stdout.splitlines())
            if tags.tag_of(name).startswith(prefix)
        ]
        if len(rows) >= expect or time.monotonic() > end:
            return rows
        time.sleep(1)


def test_an_array_is_one_submission_and_a_failed_task_restarts_alone(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, ARRAY)
    run = oellm("reconcile", str(bundle), "--wait", "--interval", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("of array train") == 3, run.stdout

    firsts = {job: ledger(bundle, job)[0]["job_id"] for job in ("t_0", "t_1", "t_2")}
    array_ids = {job_id.split("_")[0] for job_id in firsts.values()}
    assert len(array_ids) == 1, f"one sbatch for all three: {firsts}"
    (array_id,) = array_ids
    assert firsts == {f"t_{i}": f"{array_id}_{i}" for i in range(3)}

    attempts = ledger(bundle, "t_1")
    assert [a["final_state"] for a in attempts] == ["FAILED", "COMPLETED"]
    assert attempts[1]["cause"] == "restart after FAILED"
    again = attempts[1]["job_id"]
    assert again.endswith("_1") and not again.startswith(array_id + "_"), again
    for job in ("t_0", "t_2"):
        assert [a["final_state"] for a in ledger(bundle, job)] == ["COMPLETED"]

    out = tmp_path / "out"
    logs = out / "arrays" / "train"
    link = out / "t_1" / "current_1.log"
    assert os.readlink(link) == f"../arrays/train/slurm-{again}.log"
    assert link.read_text() == f"job t_1 is task 1 of {again.split('_')[0]}\n"
    assert f"job t_1 is task 1 of {array_id}\n" in (logs / f"slurm-{array_id}_1.log").read_text()
    assert (out / "t_2" / "current_2.log").read_text() == f"job t_2 is task 2 of {array_id}\n"
    # The markers each task wrote are named by the task, as squeue and sacct name it.
    assert (out / "t_1" / ".oellm" / f"{again}.exit").read_text() == "0\n"

    rows = sacct_rows(tag_prefix(bundle), expect=4)
    assert sorted(job_id for job_id, _ in rows) == sorted([*firsts.values(), again]), rows
    assert status_rows(bundle)["t_1"]["state"] == "COMPLETED"


@pytest.mark.parametrize("point", ["after-intent", "after-sbatch", "after-record"])
def test_killed_during_an_array_submission_submits_each_task_once(
    tmp_path: Path, point: str
) -> None:
    bundle = compile_to(tmp_path, ARRAY.replace("[0, 1, 2]", "[0, 2, 3]"))
    try:
        crashed = oellm("reconcile", str(bundle), env={"OELLM_CRASH_AT": point})
        assert crashed.returncode == -9, crashed.stdout + crashed.stderr
        run = oellm("reconcile", str(bundle), "--wait", "--interval", "1")
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        cancel_prefix(tag_prefix(bundle))
    jobs = ("t_0", "t_2", "t_3")
    ledgers = {job: ledger(bundle, job) for job in jobs}
    # Intents that never reached SLURM are given up once their grace is over, and the array
    # goes again, once, as the next attempt of each member.
    states = ["NOT_SUBMITTED", "COMPLETED"] if point == "after-intent" else ["COMPLETED"]
    for attempts in ledgers.values():
        assert [a["final_state"] for a in attempts] == states, ledgers
    ids = [attempts[-1]["job_id"] for attempts in ledgers.values()]
    assert run.stdout.count("adopted") == (3 if point == "after-sbatch" else 0), run.stdout
    assert len({job_id.split("_")[0] for job_id in ids}) == 1, ids
    assert sorted(job_id.split("_")[1] for job_id in ids) == ["0", "1", "2"]
    rows = sacct_rows(tag_prefix(bundle), expect=3)
    assert sorted(job_id for job_id, _ in rows) == sorted(ids), rows


# More members than `records.BATCH_MIN`: their intents go to disk with one sync, and their
# submitted records in one batch, not one fsync each. Held, so that squeue shows every task.
MANY = 40
LARGE = f"""
project: {{name: many}}
stage: train
job: {{name: "m_${{vars.i}}"}}
vars: {{i: 0}}
backend: {{bash: {{command: "true"}}}}
slurm: {{array: true, sbatch: {{time: 1, hold: true}}}}
sweep:
  params: {{vars.i: [{", ".join(str(i) for i in range(MANY))}]}}
"""


def queued_tasks(prefix: str) -> list[str]:
    """The task ids (`<array>_<index>`) of our queued array tasks whose tag starts with
    `prefix`, one line per task (`-r`)."""
    listed = subprocess.run(
        ["squeue", "--me", "-r", "-h", "-o", "%i|%j"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [
        job_id
        for job_id, _, name in (line.partition("|") for line in listed.stdout.splitlines())
        if tags.tag_of(name).startswith(prefix)
    ]


def attempts_on_disk(bundle: Path, job: str) -> list[dict[str, object]]:
    folder = load_bundle(bundle).state_path / "jobs" / job
    return [json.loads(path.read_text()) for path in sorted(folder.glob("attempt-*.json"))]


@pytest.mark.parametrize("point", ["after-intent", "after-sbatch", "after-record"])
def test_killed_during_a_large_array_submission_submits_each_task_once(
    tmp_path: Path, point: str
) -> None:
    assert MANY >= BATCH_MIN
    bundle = compile_to(tmp_path, LARGE)
    prefix = tag_prefix(bundle)
    jobs = [f"m_{i}" for i in range(MANY)]
    try:
        crashed = oellm("reconcile", str(bundle), env={"OELLM_CRASH_AT": point})
        assert crashed.returncode == -9, crashed.stdout + crashed.stderr
        # Killed after its intents: each is on disk, nothing reached SLURM.
        if point == "after-intent":
            assert queued_tasks(prefix) == []
            assert all(
                [a["phase"] for a in attempts_on_disk(bundle, job)] == ["intent"] for job in jobs
            )
        deadline = time.monotonic() + 90
        while True:
            run = oellm("reconcile", str(bundle))
            assert run.returncode in (0, 1), run.stdout + run.stderr
            queued = queued_tasks(prefix)
            if len(queued) >= MANY or time.monotonic() > deadline:
                break
            time.sleep(1)
        run = oellm("reconcile", str(bundle))  # and one more: nothing new
        assert run.returncode in (0, 1), run.stdout + run.stderr
        queued = queued_tasks(prefix)
    finally:
        cancel_prefix(prefix)
    assert len(queued) == MANY == len(set(queued)), queued
    (array_id,) = {task.split("_")[0] for task in queued}
    assert sorted(queued) == sorted(f"{array_id}_{i}" for i in range(MANY))
    phases = ["finished", "submitted"] if point == "after-intent" else ["submitted"]
    for job in jobs:
        attempts = attempts_on_disk(bundle, job)
        assert [a["phase"] for a in attempts] == phases, (job, attempts)
        assert attempts[-1]["job_id"] == f"{array_id}_{job.split('_')[1]}", attempts
    assert run.stdout.count("adopted") == 0, run.stdout
