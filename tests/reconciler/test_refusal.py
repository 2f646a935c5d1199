"""A submission the scheduler refuses for good (issue 13) ends its attempt as SUBMIT_FAILED
with the scheduler's words and is not submitted again until the script changes; on the local
scheduler, whose refusal is an option it cannot read. The real SLURM: test_refusal_slurm.py."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import write
from tests.reconciler.local_cli import Cli, cli

__all__ = ["cli"]

BAD_TIME = """
project: {name: refuse}
backend: {bash: {command: "echo hi"}}
slurm: {sbatch: {time: %s}}
"""


def test_a_refused_submission_ends_at_once_and_waits_for_a_new_script(
    cli: Cli, tmp_path: Path
) -> None:
    write(tmp_path / "exp.yaml", BAD_TIME % "banana")
    assert cli("compile", "exp.yaml", "-o", "b")[0] == 0
    code, _, err = cli("reconcile", "b")
    assert code == 1
    assert "refuse: sbatch refused it: invalid time limit 'banana'" in err
    (attempt,) = cli.ledger("b", "refuse")
    assert (attempt["phase"], attempt["final_state"], attempt["job_id"]) == (
        "finished",
        "SUBMIT_FAILED",
        None,
    )
    assert "invalid time limit 'banana'" in attempt["reason"]
    row = cli.rows("b")["refuse"]
    assert row["state"] == "SUBMIT_FAILED"
    assert "not submitted again until the script changes" in row["reason"]
    # Round after round: nothing is submitted again, and the rounds are quiet.
    for _ in range(2):
        assert cli("reconcile", "b") == (0, "", "")
    assert len(cli.ledger("b", "refuse")) == 1
    dry = cli("reconcile", "b", "--dry-run")[1]
    assert "refuse: no action: sbatch refused it" in dry
    # A fixed script runs as a new attempt.
    write(tmp_path / "exp.yaml", BAD_TIME % "'00:05:00'")
    assert cli("compile", "exp.yaml", "-o", "b")[0] == 0
    rows = cli.until("b", {"COMPLETED"})
    assert rows["refuse"]["attempt"] == 2
    assert (
        "script changed since attempt 1 ended SUBMIT_FAILED"
        in cli.ledger("b", "refuse")[1]["cause"]
    )
