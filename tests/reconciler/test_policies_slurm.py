"""Restart policies and log events on the real local SLURM, with bash jobs that print lines,
sleep, fail or run out of time. Each test runs `oellm reconcile --wait` as cron would run
rounds, then reads the attempt ledger with `oellm status JOB --json`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reconciler.slurm_helpers import compile_to, ledger, oellm, status_rows

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> None:
    return None


def test_a_job_that_fails_twice_then_succeeds(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: flaky}
        backend:
          bash:
            command: |
              n=$(cat "${job.base_output_dir}/count" 2>/dev/null || echo 0)
              n=$((n + 1)); echo "$n" > "${job.base_output_dir}/count"
              echo "attempt $n"
              [ "$n" -ge 3 ]
        job:
          restart: {on: [FAILED], max_attempts: 3}
        """,
    )
    run = oellm("reconcile", str(bundle), "--wait", "--interval", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    attempts = ledger(bundle, "flaky")
    assert [(a["attempt"], a["final_state"], a["exit_code"]) for a in attempts] == [
        (1, "FAILED", 1),
        (2, "FAILED", 1),
        (3, "COMPLETED", 0),
    ]
    assert attempts[1]["cause"] == "restart after FAILED"
    assert len({a["job_id"] for a in attempts}) == 3


def test_a_job_killed_by_timeout_is_restarted_and_finishes(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: slow}
        slurm: {sbatch: {time: "00:01:00"}}
        backend:
          bash:
            command: |
              if [ -e "${job.base_output_dir}/resumed" ]; then echo finished; exit 0; fi
              touch "${job.base_output_dir}/resumed"
              sleep 300
        """,
    )
    run = oellm("reconcile", str(bundle), "--wait", "--interval", "2", timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    attempts = ledger(bundle, "slow")
    assert [a["final_state"] for a in attempts] == ["TIMEOUT", "COMPLETED"]
    assert attempts[1]["cause"] == "restart after TIMEOUT"


def test_a_log_line_finishes_the_job_instead_of_a_restart(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        r"""
        project: {name: done}
        backend:
          bash:
            command: |
              echo "iteration 10 on node nid007"
              echo "[after training is done]"
              exit 1
        job:
          restart: {on: [FAILED], max_attempts: 3}
          log_events:
            - name: finished
              kind: substring
              pattern: "[after training is done]"
              actions: [{kind: finish}]
            - name: node
              kind: regex
              pattern: "on node (?P<node>nid[0-9]+)"
              match_once: true
              actions:
                - kind: append_to_file
                  path: "${job.base_output_dir}/nodes.txt"
                  line: "{node} {job_id}"
        """,
    )
    run = oellm("reconcile", str(bundle), "--wait", "--interval", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    attempts = ledger(bundle, "done")
    assert len(attempts) == 1
    assert attempts[0]["final_state"] == "FAILED"
    assert attempts[0]["finish_requested"].startswith("finished: [after training is done]")
    fired = [(e["event"], e["line"]) for e in attempts[0]["events"]]
    assert fired == [
        ("node", "iteration 10 on node nid007"),
        ("finished", "[after training is done]"),
    ]
    job_id = attempts[0]["job_id"]
    assert (tmp_path / "out/done/nodes.txt").read_text() == f"nid007 {job_id}\n"
    rows = status_rows(bundle)
    # A finish event counts as completed, whatever the exit code (SLURM's state is kept).
    assert (rows["done"]["state"], rows["done"]["scheduler_state"]) == ("COMPLETED", "FAILED")
    assert rows["done"]["reason"].startswith("finished by event: finished: [after training")


def test_an_inactivity_detector_cancels_a_silent_job(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: silent}
        backend: {bash: {command: "echo started; sleep 300"}}
        job:
          log_events:
            - name: hang
              kind: inactivity
              seconds: 4
              actions: [{kind: cancel, reason: "no output for 4 s"}]
        """,
    )
    run = oellm("reconcile", str(bundle), "--wait", "--interval", "1")
    assert run.returncode == 1, run.stdout + run.stderr  # cancelled: not completed
    attempts = ledger(bundle, "silent")
    assert len(attempts) == 1
    assert attempts[0]["final_state"] == "CANCELLED"
    assert attempts[0]["cancel_requested"] == "no output for 4 s"
    assert [e["event"] for e in attempts[0]["events"]] == ["hang"]
    rows = status_rows(bundle)
    assert rows["silent"]["reason"] == "cancelled: no output for 4 s"
