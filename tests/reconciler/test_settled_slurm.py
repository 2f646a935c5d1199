"""Real SLURM: a job that completed is settled by the next round (its records move to
`<state_dir>/completed/`), later rounds do not read its records, and losing them still never
means a second submission."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.reconciler.slurm_helpers import compile_to, ledger, oellm
from tests.reconciler.slurm_helpers import status_rows as status
from tests.reconciler.test_never_twice_slurm import (
    cancel_under,
    reconcile,
    state_dir,
    submissions,
    submitted,
)

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object, tmp_path: Path) -> Iterator[None]:
    yield
    cancel_under(tmp_path)


TWO_STAGES = """
project: {name: settle}
job: {name: "settle_${stage}"}
backend: {bash: {command: "echo ran"}}
sweep:
  type: list
  groups:
    - params: {vars.i: [0]}
      defaults: {stage: first}
    - params: {vars.i: [0]}
      defaults: {stage: second}
      job.start_conditions:
        - class_name: FileExistsCondition
          path: "{go}"
vars: {i: 0}
"""


def _completed(bundle: Path, *jobs: str) -> bool:
    """A round ran, and it recorded each job as ended (not only seen ended in SLURM)."""
    reconcile(bundle, codes=(0, 1))
    return all(ledger(bundle, job)[-1]["final_state"] == "COMPLETED" for job in jobs)


def test_a_completed_job_settles_and_is_not_read_again(tmp_path: Path) -> None:
    go = tmp_path / "GO"
    bundle = compile_to(tmp_path, TWO_STAGES.replace("{go}", str(go)))
    state = state_dir(bundle)
    wait_for("the first stage to complete", lambda: _completed(bundle, "settle_first"), 120, 1)
    # The round after the one that recorded the end settles it.
    reconcile(bundle)
    settled = state / "completed" / "settle_first"
    assert (settled / "attempt-0001.json").is_file()
    assert not (state / "jobs" / "settle_first").exists()

    # A round does not read a settled record: garbled, it changes nothing there...
    record = settled / "attempt-0001.json"
    kept = record.read_bytes()
    record.write_text("{garbled")
    out = reconcile(bundle, codes=(0,))
    assert submitted(out) == [] and "damaged" not in out, out
    # ...while `oellm status` reads every record and names it.
    run = oellm("status", str(bundle))
    assert "damaged state record" in run.stdout + run.stderr
    record.write_bytes(kept)

    # The dependent stage still sees its upstream as completed.
    go.write_text("")
    out = reconcile(bundle, codes=(1,))
    assert submitted(out) == ["settle_second"], out
    wait_for("the second stage to complete", lambda: _completed(bundle, "settle_second"), 120, 1)
    reconcile(bundle)
    assert sorted(p.name for p in (state / "completed").iterdir()) == [
        "settle_first",
        "settle_second",
    ]
    # A cancel of the whole bundle has nothing to do for settled jobs.
    run = oellm("cancel", str(bundle))
    assert run.returncode in (0, 1), run.stdout + run.stderr
    assert "dropped" not in run.stdout, run.stdout
    assert {row["state"] for row in status(bundle).values()} == {"COMPLETED"}
    assert submissions(tmp_path) == {"settle_first": 1, "settle_second": 1}


def test_lost_settled_records_are_recovered_from_slurm_not_submitted(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: settle_lost}
        job: {name: "lost_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "echo ran"}}
        sweep: {params: {vars.i: [0, 1]}}
        """,
    )
    state = state_dir(bundle)

    wait_for("both jobs to complete", lambda: _completed(bundle, "lost_0", "lost_1"), 120, 1)
    reconcile(bundle)
    assert sorted(p.name for p in (state / "completed").iterdir()) == ["lost_0", "lost_1"]
    ids = {job: row["job_id"] for job, row in status(bundle).items()}

    shutil.rmtree(state / "completed" / "lost_0")
    out = reconcile(bundle)
    assert submitted(out) == [], out
    assert any("recovered" in line and "lost_0" in line for line in out.splitlines()), out
    assert {job: row["job_id"] for job, row in status(bundle).items()} == ids
    assert submissions(tmp_path) == {"lost_0": 1, "lost_1": 1}
