"""Recompiling a running experiment, on the real local SLURM: unchanged jobs keep their state,
changed queued jobs are resubmitted, changed running jobs keep running (or restart with
--restart-changed), removed jobs are reported (and cancelled with --prune), renamed jobs keep
their history through `moved:`. Everything shows in --dry-run first."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.reconciler.slurm_helpers import compile_to, oellm
from tests.reconciler.slurm_helpers import status_rows as rows

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> None:
    return None


def wait_for_state(bundle: Path, job: str, states: set[str]) -> dict[str, Any]:
    def row() -> dict[str, Any] | None:
        found = rows(bundle).get(job)
        return found if found and found["state"] in states else None

    return wait_for(f"{job} to reach {states}", row, 60)


def experiment(
    held: str, running: str, extra: str = "", names: tuple[str, ...] = ("q", "r")
) -> str:
    q, r = names
    text = f"""
        project: {{name: recompile}}
        job: {{name: "${{vars.name}}"}}
        vars: {{name: x, cmd: "true", hold: false}}
        backend: {{bash: {{command: "${{vars.cmd}}"}}}}
        slurm: {{sbatch: {{hold: "${{vars.hold}}"}}}}
        sweep:
          configs:
            - {{vars.name: {q}, vars.hold: true, vars.cmd: "{held}"}}
            - {{vars.name: {r}, vars.cmd: "{running}"}}
    """
    return text + extra


def test_changed_queued_job_is_resubmitted_and_running_one_keeps_running(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, experiment("echo old; sleep 1", "sleep 300"))
    assert oellm("reconcile", str(bundle)).returncode == 1
    first = wait_for_state(bundle, "r", {"RUNNING"})
    queued = rows(bundle)["q"]
    assert queued["state"] == "PENDING"

    # Unchanged recompile: nothing to do.
    bundle = compile_to(tmp_path, experiment("echo old; sleep 1", "sleep 300"))
    quiet = oellm("reconcile", str(bundle))
    assert (quiet.returncode, quiet.stdout) == (0, "")

    bundle = compile_to(tmp_path, experiment("echo new; sleep 1", "sleep 301"))
    dry = oellm("reconcile", str(bundle), "--dry-run")
    assert "q: would cancel job" in dry.stdout and "script changed" in dry.stdout
    assert "r: no action: running with the previous script" in dry.stdout
    assert rows(bundle)["q"]["job_id"] == queued["job_id"]  # a dry run changed nothing

    acted = oellm("reconcile", str(bundle))
    assert acted.returncode == 1, acted.stdout + acted.stderr
    end = time.monotonic() + 60
    while time.monotonic() < end:
        oellm("reconcile", str(bundle))
        if rows(bundle)["q"]["attempt"] == 2:
            break
        time.sleep(1)
    now = rows(bundle)
    assert now["q"]["attempt"] == 2 and now["q"]["job_id"] != queued["job_id"]
    assert now["r"]["job_id"] == first["job_id"] and now["r"]["state"] == "RUNNING"
    ledger = json.loads(oellm("status", str(bundle), "q", "--json").stdout)["attempts"]
    assert ledger[0]["final_state"] == "CANCELLED"
    assert ledger[1]["cause"].startswith("script changed since attempt 1")

    # --restart-changed restarts the running one now.
    restarted = oellm("reconcile", str(bundle), "--restart-changed")
    assert f"cancelled job {first['job_id']}" in restarted.stdout
    end = time.monotonic() + 60
    while time.monotonic() < end:
        oellm("reconcile", str(bundle))
        if rows(bundle)["r"]["attempt"] == 2:
            break
        time.sleep(1)
    assert rows(bundle)["r"]["attempt"] == 2
    oellm("cancel", str(bundle))


def test_removed_jobs_are_reported_and_pruned_only_on_request(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, experiment("sleep 1", "sleep 300"))
    assert oellm("reconcile", str(bundle)).returncode == 1
    running = wait_for_state(bundle, "r", {"RUNNING"})
    bundle = compile_to(
        tmp_path,
        experiment("sleep 1", "sleep 300").replace(
            '            - {vars.name: r, vars.cmd: "sleep 300"}\n', ""
        ),
    )
    assert "r" not in rows(bundle)
    kept = oellm("reconcile", str(bundle), "--dry-run")
    assert "r: no action: removed from the bundle, still RUNNING; --prune cancels it" in kept.stdout
    assert oellm("reconcile", str(bundle)).returncode in (0, 1)
    squeue = subprocess.run(
        ["squeue", "-h", "-j", running["job_id"], "-o", "%T"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert squeue.stdout.strip() == "RUNNING"
    pruned = oellm("reconcile", str(bundle), "--prune")
    assert f"cancelled job {running['job_id']}" in pruned.stdout
    oellm("cancel", str(bundle))


def test_a_renamed_job_keeps_its_history(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, experiment("sleep 1", "sleep 300"))
    assert oellm("reconcile", str(bundle)).returncode == 1
    running = wait_for_state(bundle, "r", {"RUNNING"})
    bundle = compile_to(
        tmp_path, experiment("sleep 1", "sleep 300", names=("q", "r2")), moved={"r": "r2"}
    )
    moved = oellm("reconcile", str(bundle))
    assert "moved the records of r to r2" in moved.stdout
    assert "submitted r2" not in moved.stdout
    row = rows(bundle)["r2"]
    # Same SLURM job, still running; only the name changed (the script differs by the name).
    assert row["job_id"] == running["job_id"] and row["state"] == "RUNNING"
    oellm("cancel", str(bundle))
