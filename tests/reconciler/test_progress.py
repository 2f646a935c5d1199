"""`oellm reconcile --wait` prints one time-stamped line per round that changed something and
a summary at the end; `--dry-run --actions-only` only the actions and their count."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from pathlib import Path

from oellm.reconciler.actions import Finish, Submit, Wait
from oellm.reconciler.progress import changes, final_line, round_line
from tests.helpers import write
from tests.reconciler.local_cli import Cli, cli

__all__ = ["cli"]


def test_round_line_counts_what_the_round_did() -> None:
    actions = [
        Submit("a", "first submission", attempt=1),
        Submit("b", "first submission", attempt=1),  # refused: not carried out
        Finish("c", "ended", attempt=1, job_id="8", state="COMPLETED"),
        Finish("d", "ended", attempt=1, job_id="9", state="TIMEOUT"),
        Wait("e", "running"),
    ]
    done = changes(actions, ["submitted a attempt 1 as job 7 (first submission)"])
    line = round_line(
        7, done, Counter({"RUNNING": 14, "PENDING": 20}), datetime(2026, 1, 1, 12, 3, 5)
    )
    assert line == "[12:03:05] round 7: 1 submitted, 1 completed, 1 failed; 14 running, 20 pending"
    assert (
        round_line(2, Counter(), Counter(), datetime(2026, 1, 1)) == "[00:00:00] round 2: no change"
    )
    assert final_line(3, 125, Counter({"COMPLETED": 2, "FAILED": 1})) == (
        "done after 3 rounds in 2m05s: 2 COMPLETED, 1 FAILED"
    )


def test_wait_prints_a_line_per_round_that_changed_something(cli: Cli, tmp_path: Path) -> None:
    write(
        tmp_path / "e.yaml",
        """
        project: {name: w}
        job: {name: "w_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "sleep ${vars.i}; exit ${vars.i}"}}
        sweep: {params: {vars.i: [0, 2]}}
        """,
    )
    assert cli("compile", "e.yaml", "-o", "b")[0] == 0
    code, out, _ = cli("reconcile", "b", "--dry-run", "--actions-only")
    assert (code, out.splitlines()) == (
        0,
        [
            "w_0: would submit attempt 1: first submission",
            "w_2: would submit attempt 1: first submission",
            "2 actions",
        ],
    )
    code, out, _ = cli("reconcile", "b", "--wait", "--interval", "0.3")
    assert code == 1  # w_2 failed
    lines = out.splitlines()
    stamped = [line for line in lines if not line.startswith("  ")]
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] round 1: 2 submitted", stamped[0])
    assert "  submitted w_0 attempt 1 as job 1 (first submission)" in lines
    rounds = [int(m.group(1)) for line in stamped if (m := re.search(r"round (\d+):", line))]
    # Quiet rounds (w_2 sleeping) print nothing, so the round numbers skip.
    assert rounds == sorted(rounds) and len(rounds) == 3, lines
    assert re.search(r"round \d+: 1 failed$", stamped[2])
    assert re.fullmatch(r"done after \d+ rounds in \d+s: 1 COMPLETED, 1 FAILED", stamped[3])
    assert stamped[4] == "finished; not completed: w_2"
