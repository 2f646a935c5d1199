"""One array task on the real local SLURM: a job with an `array_index` in the lockfile runs as
that task of a one-task array, keeps its own `current_<index>.log`, and a restart submits that
index alone again (the lockfile fields are written by hand here: the compiler's grouping of
jobs into arrays does not exist yet)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.reconciler.test_chains_slurm import compile_to, ledger, oellm

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> None:
    return None


def test_a_restarted_array_task_keeps_its_index_and_its_current_link(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: arr}
        backend:
          bash:
            command: |
              echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"
              n=$(( $(cat "${job.base_output_dir}/count" 2>/dev/null || echo 0) + 1 ))
              echo "$n" > "${job.base_output_dir}/count"
              [ "$n" -ge 2 ]
        job:
          log_path: "${job.base_output_dir}/slurm-%A_%a.log"
          restart: {on: [FAILED], max_attempts: 3}
        """,
    )
    lock = bundle / "plan.lock.json"
    data = json.loads(lock.read_text())
    data["jobs"][0].update(array_group="arr", array_index=3)
    lock.write_text(json.dumps(data))

    run = oellm("reconcile", str(bundle), "--wait", "--interval", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    attempts = ledger(bundle, "arr")
    assert [a["final_state"] for a in attempts] == ["FAILED", "COMPLETED"]
    first, second = (a["job_id"] for a in attempts)
    assert first.endswith("_3") and second.endswith("_3") and first != second
    out = tmp_path / "out" / "arr"
    assert os.readlink(out / "current_3.log") == f"slurm-{second}.log"
    array_id = second.split("_")[0]
    assert (out / "current_3.log").read_text() == f"task 3 of {array_id}\n"
    # srun's own line about the failed step may come first.
    assert f"task 3 of {first.split('_')[0]}\n" in (out / f"slurm-{first}.log").read_text()
