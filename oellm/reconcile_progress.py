"""`oellm reconcile --wait` on screen: a time-stamped line per round that changed something,
with what the round did indented under it, a heartbeat after a long quiet spell, and a summary
line at the end (`reconciler/progress.py` words them)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from oellm.reconciler.current import current
from oellm.reconciler.progress import HEARTBEAT_S, changes, final_line, round_line


class Progress:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.rounds = 0
        self.started = time.monotonic()
        self.last_line = self.started

    def states(self, report: Any) -> Counter[str]:
        # Jobs settled in an earlier round completed: their records are not read again.
        history = self.session.history(read_completed=False)
        found: Counter[str] = Counter()
        for job in self.session.bundle.jobs:
            if history.settled(job.name):
                found["COMPLETED"] += 1
                continue
            state = current(job.name, history, report.observation, job).state
            found[state or "NOT_SUBMITTED"] += 1
        return found

    def round(self, report: Any, lines: Sequence[str]) -> None:
        self.rounds += 1
        acted = report.outcome.acted if report.outcome else lines
        done = changes(report.actions, acted)
        quiet = not lines and not (report.outcome and report.outcome.errors)
        now = time.monotonic()
        if quiet and now - self.last_line < HEARTBEAT_S:
            return
        click.echo(round_line(self.rounds, done, self.states(report), datetime.now()))
        for line in lines:
            click.echo(f"  {line}")
        self.last_line = now

    def done(self) -> None:
        history = self.session.history(read_completed=False)
        found: Counter[str] = Counter()
        for job in self.session.bundle.jobs:
            if history.settled(job.name):
                found["COMPLETED"] += 1
                continue
            latest = history.latest(job.name)
            if job.name in history.dropped and (latest is None or latest.phase == "finished"):
                found["DROPPED"] += 1
            elif latest is None:
                found["NOT_SUBMITTED"] += 1
            elif latest.succeeded:
                found["COMPLETED"] += 1
            else:
                found[latest.final_state or latest.phase] += 1
        click.echo(final_line(self.rounds, time.monotonic() - self.started, found))
