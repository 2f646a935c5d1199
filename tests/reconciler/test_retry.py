"""`oellm retry` on the local scheduler: a request recorded under the state lock, submitted
exactly once by the next round with fresh restart budgets, for failed, cancelled and dropped
jobs; never for jobs in flight. The real SLURM: test_retry_slurm.py."""

from __future__ import annotations

import json
from pathlib import Path

from oellm.reconciler.lock import StateLock
from tests.helpers import write
from tests.reconciler.local_cli import Cli, cli

__all__ = ["cli"]

SWEEP = """
project: {name: rt}
job:
  name: "rt_${vars.i}"
  restart: {on: [FAILED], code_restarts: 1, backoff_seconds: 0}
vars: {i: 0}
backend: {bash: {command: "echo run ${vars.i}; exit ${vars.i}"}}
sweep: {params: {vars.i: [0, 3]}}
"""
ENDED = {"COMPLETED", "FAILED", "DROPPED", "CANCELLED", "SUBMIT_FAILED"}


def causes(cli: Cli, job: str) -> list[str]:
    return [a["cause"] for a in cli.ledger("b", job)]


def test_a_failed_job_is_retried_once_with_fresh_budgets(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path / "exp.yaml", SWEEP)
    assert cli("compile", "exp.yaml", "-o", "b")[0] == 0
    rows = cli.until("b", ENDED)
    assert (rows["rt_0"]["state"], rows["rt_3"]["state"]) == ("COMPLETED", "FAILED")
    assert len(causes(cli, "rt_3")) == 2  # code_restarts: 1 spent
    # Nothing happens without the user.
    assert cli("reconcile", "b") == (0, "", "")
    code, out, _ = cli("retry", "b", "--dry-run")
    assert code == 0
    assert out.splitlines()[0].startswith("would retry rt_3: FAILED:")
    assert out.splitlines()[-1] == "1 job would be retried"
    state = tmp_path / "out" / ".oellm" / "rt" / "jobs"
    assert not (state / "rt_3" / "retry.json").exists()
    code, out, _ = cli("retry", "b")
    assert code == 1, out
    assert "retry recorded for rt_3" in out
    request = json.loads((state / "rt_3" / "retry.json").read_text())
    assert request["after"] == 2
    # The command submits nothing; the round does, once.
    assert len(causes(cli, "rt_3")) == 2
    code, out, _ = cli("retry", "b", "rt_3")
    assert (code, out.splitlines()[0]) == (
        0,
        "rt_3: not retried: a retry is requested already: the next round submits it",
    )
    code, out, _ = cli("reconcile", "b")
    assert code == 1 and out.count("submitted rt_3 attempt 3") == 1
    # Fresh budgets: attempt 3 fails and is restarted once more (code_restarts 1).
    cli.until("b", ENDED)
    found = causes(cli, "rt_3")
    assert len(found) == 4, found
    assert found[2].startswith("retried by the user (requested at ")
    assert found[2].endswith(" after attempt 2)")
    assert found[3] == "restart after FAILED"
    assert cli("reconcile", "b") == (0, "", "")


def test_cancelled_and_dropped_jobs_are_revived(cli: Cli, tmp_path: Path) -> None:
    write(
        tmp_path / "exp.yaml",
        """
        project: {name: rc}
        job: {name: "rc_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "sleep ${vars.i}"}}
        sweep: {params: {vars.i: [0, 30]}}
        """,
    )
    assert cli("compile", "exp.yaml", "-o", "b")[0] == 0
    # rc_0 dropped before it ever ran; rc_30 cancelled while it runs.
    assert cli("cancel", "b", "rc_0")[0] == 1
    assert cli("reconcile", "b")[0] == 1
    code, out, _ = cli("retry", "b", "rc_30")
    assert code == 0
    assert out.splitlines()[0].startswith("rc_30: not retried: in flight (attempt 1, job ")
    assert cli("cancel", "b", "rc_30")[0] == 1
    rows = cli.until("b", ENDED)
    assert (rows["rc_0"]["state"], rows["rc_30"]["state"]) == ("DROPPED", "CANCELLED")
    assert cli("retry", "b", "--failed")[1].startswith("nothing to retry (only failed jobs)")
    code, out, _ = cli("retry", "b", "--cancelled")
    assert code == 1
    assert "retry recorded for rc_0 (dropped: cancelled by the user)" in out
    assert "retry recorded for rc_30 (cancelled: cancelled by the user)" in out
    assert cli.rows("b")["rc_0"]["state"] != "DROPPED"
    code, out, _ = cli("reconcile", "b")
    assert code == 1
    assert out.count("submitted rc_0 attempt 1") == 1
    assert out.count("submitted rc_30 attempt 2") == 1
    rows = cli.rows("b")
    assert rows["rc_30"]["state"] in ("PENDING", "RUNNING")
    # A later cancel stands again: the drop is new, the request does not undo it.
    assert cli("cancel", "b", "rc_30")[0] == 1
    rows = cli.until("b", ENDED)
    assert rows["rc_0"]["state"] == "COMPLETED" and rows["rc_30"]["state"] == "CANCELLED"
    assert len(cli.ledger("b", "rc_30")) == 2


def test_selection_errors_and_nothing_to_retry(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path / "exp.yaml", SWEEP)
    assert cli("compile", "exp.yaml", "-o", "b")[0] == 0
    code, _, err = cli("retry", "b", "rt_9")
    assert code == 2 and "no job named rt_9" in err
    code, _, err = cli("retry", "b", "zz_*")
    assert code == 2 and "no job named zz_*" in err
    code, _, err = cli("retry", "b", "--stage", "decay")
    assert code == 2 and "no stage decay" in err
    code, out, _ = cli("retry", "b")
    assert (code, out) == (0, "nothing to retry among 2 jobs: 2 not submitted yet\n")
    cli.until("b", ENDED)
    code, out, _ = cli("retry", "b", "rt_0")
    assert (code, out.splitlines()[0]) == (0, "rt_0: not retried: completed")
    code, out, _ = cli("retry", "b", "rt_*", "--dry-run")
    assert code == 0 and "would retry rt_3" in out and "rt_0" not in out


def test_a_busy_state_is_exit_75_and_records_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: object
) -> None:
    write(tmp_path / "exp.yaml", SWEEP)
    assert cli("compile", "exp.yaml", "-o", "b")[0] == 0
    cli.until("b", ENDED)
    import os

    os.environ["OELLM_LOCK_WAIT_SECONDS"] = "0.2"
    lock = StateLock(tmp_path / "out" / ".oellm" / "rt")
    lock.acquire()
    try:
        code, out, _ = cli("retry", "b")
    finally:
        lock.release()
        del os.environ["OELLM_LOCK_WAIT_SECONDS"]
    assert code == 75 and "Nothing was recorded" in out
    assert not (tmp_path / "out" / ".oellm" / "rt" / "jobs" / "rt_3" / "retry.json").exists()
