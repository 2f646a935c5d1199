"""`oellm status`: a table of every job of one or more bundles with a count per state, filters
(`--state`, `--stage`, name globs), the log and last lines of failed jobs, `--watch`, colors on
a terminal, and versioned JSON (`schemas/status.schema.json`). With exactly one job name it
shows that job's attempt ledger instead. Registered by `oellm.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from oellm.completion import complete_jobs_or_bundles
from oellm.errors import EXIT_OK
from oellm.guard import guarded
from oellm.options import BUNDLE, SCHEDULER
from oellm.status_ledger import show_ledger

SCHEMA_VERSION = 1
LOCK_NAME = "plan.lock.json"
COLORS = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "PENDING": "yellow",
    "CANCELLED": "magenta",
    "DROPPED": "magenta",
    "NOT_SUBMITTED": "white",
}
FAILED_COLOR = "red"


def color_enabled(stream: IO[str], env: dict[str, str] | os._Environ[str]) -> bool:
    """Colors only on a terminal, and never with NO_COLOR set to anything (no-color.org)."""
    return stream.isatty() and not env.get("NO_COLOR")


@click.command("status")
@BUNDLE
@click.argument("more", nargs=-1, shell_complete=complete_jobs_or_bundles)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (schema_version 1).")
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--stage", "stages", multiple=True, help="Only jobs of this stage (repeatable).")
@click.option(
    "--tail",
    "tail_lines",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Last log lines shown under each failed job (0: none).",
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.5),
    is_flag=False,
    flag_value=10.0,
    default=None,
    help="Redraw every SECONDS (default 10) until Ctrl-C.",
)
@SCHEDULER
@guarded
def status_command(
    bundle: Path,
    more: tuple[str, ...],
    as_json: bool,
    states: tuple[str, ...],
    stages: tuple[str, ...],
    tail_lines: int,
    watch: float | None,
    scheduler: str | None,
) -> int:
    """Show the jobs of one or more bundles: state, attempt, SLURM id, when each started
    running and for how long, why, and its log; a failed job with its last log lines.

    \b
    MORE: further bundle folders, and job names or globs ('lr_*') that narrow the table.
    With exactly one job name (no glob, one bundle): that job's attempt ledger instead.
    """
    from oellm.reconciler.session import Session

    bundles = [bundle, *(Path(m) for m in more if _is_bundle(m))]
    patterns = [m for m in more if not _is_bundle(m)]
    sessions = [Session(path, scheduler, allow_edited=True) for path in bundles]
    if _ledger_request(sessions, patterns, states, stages):
        show_ledger(sessions[0], patterns[0], as_json)
        return EXIT_OK

    def draw(out: Callable[[str], None], color: bool) -> None:
        from oellm.reconciler.status_view import build

        found = [build(s, patterns, stages, states, tail_lines) for s in sessions]
        if as_json:
            out(json.dumps(as_document(found), indent=1))
        else:
            render(found, out, color)

    color = not as_json and color_enabled(sys.stdout, os.environ)
    if watch is None:
        draw(click.echo, color)
        return EXIT_OK
    terminal = sys.stdout.isatty()
    try:
        while True:
            lines: list[str] = []
            draw(lines.append, color)
            if terminal:
                click.clear()
            stamp = datetime.now().strftime("%H:%M:%S")
            click.echo(f"every {watch:g} s, {stamp} (Ctrl-C stops)")
            for line in lines:
                click.echo(line)
            time.sleep(watch)
    except KeyboardInterrupt:
        return EXIT_OK


def _is_bundle(text: str) -> bool:
    return (Path(text) / LOCK_NAME).is_file()


def _ledger_request(
    sessions: Sequence[Any], patterns: Sequence[str], states: Sequence[str], stages: Sequence[str]
) -> bool:
    from oellm.reconciler.selection import is_glob

    return (
        len(sessions) == 1
        and len(patterns) == 1
        and not is_glob(patterns[0])
        and not states
        and not stages
    )


def as_document(found: Sequence[Any]) -> dict[str, Any]:
    """`status --json`: see schemas/status.schema.json."""
    total: Counter[str] = Counter()
    sections = []
    for section in found:
        counts = section.counts()
        total.update(counts)
        sections.append(
            {
                "bundle": section.bundle,
                "project": section.project,
                "scheduler_available": section.scheduler_available,
                "scheduler_error": section.scheduler_error,
                "summary": {"jobs": sum(counts.values()), "states": dict(sorted(counts.items()))},
                "jobs": [
                    {
                        **dataclasses.asdict(job),
                        "tail": list(job.tail),
                        "metrics": dict(job.metrics) if job.metrics is not None else None,
                    }
                    for job in section.jobs
                ],
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "bundles": sections,
        "total": {"jobs": sum(total.values()), "states": dict(sorted(total.items()))},
    }


def render(found: Sequence[Any], out: Callable[[str], None], color: bool) -> None:
    from oellm.reconciler.status_view import FAILED_STATES, summary

    total: Counter[str] = Counter()
    for number, section in enumerate(found):
        if len(found) > 1:
            if number:
                out("")
            out(f"== {section.bundle} ({section.project})")
        table = [
            (
                "JOB",
                "STAGE",
                "STATE",
                "ATTEMPT",
                "ID",
                "PROGRESS",
                "STARTED",
                "RUN",
                "REASON",
                "LOG",
            )
        ]
        for job in section.jobs:
            state = job.state + (f" (link {job.link})" if job.link else "")
            table.append(
                (
                    job.job,
                    job.stage or "-",
                    state,
                    str(job.attempt or "-"),
                    job.job_id or "-",
                    job.progress or "-",
                    _when(job.started),
                    _duration(job.run_seconds),
                    job.reason,
                    job.log or "-",
                )
            )
        tails = {index + 1: job.tail for index, job in enumerate(section.jobs) if job.tail}
        colors = {
            index + 1: _color(job.state, FAILED_STATES) for index, job in enumerate(section.jobs)
        }
        _print_rows(table, out, tails, colors if color else {})
        counts = section.counts()
        total.update(counts)
        out(summary(counts))
        if not section.scheduler_available:
            out(
                f"(scheduler unavailable: states marked ? are the last known ones: "
                f"{section.scheduler_error})"
            )
    if len(found) > 1:
        out(f"total: {summary(total)}")


def _print_rows(
    table: Sequence[Sequence[str]],
    out: Callable[[str], None],
    tails: dict[int, tuple[str, ...]],
    colors: dict[int, str | None],
) -> None:
    """The layout of the ledger's table (`status_ledger`), with the STATE cell colored and a
    failed job's last log lines under its row."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for number, row in enumerate(table):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        shade = colors.get(number)
        if shade:
            cells[2] = click.style(cells[2], fg=shade, bold=shade == FAILED_COLOR)
        out("  ".join([*cells, row[-1]]).rstrip())
        for line in tails.get(number, ()):
            out(f"    | {line}")


def _color(state: str, failed: frozenset[str]) -> str | None:
    base = state.rstrip("?")
    if base in failed:
        return FAILED_COLOR
    return COLORS.get(base, "blue")


def _when(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromisoformat(stamp).astimezone().strftime("%m-%d %H:%M")


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


__all__ = ["status_command"]
