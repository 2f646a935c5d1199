"""The attempt ledger `oellm status BUNDLE JOB` shows (`status_cli`): every attempt of one job
with its SLURM id, state, exit code and last logged iteration and loss, then its events, chain
links and requests, as a table or as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def _metrics_json(found: Any) -> dict[str, Any] | None:
    import dataclasses

    if found is None:
        return None
    data = dataclasses.asdict(found)
    for key in ("offsets", "seq_length", "stride", "points", "last_point"):
        data.pop(key)
    return data


def _print_table(table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def show_ledger(session: Any, job: str, as_json: bool) -> None:
    """`oellm status BUNDLE JOB`: that job's attempts as a table (or JSON with --json), then
    each attempt's events, chain links and requests, and its drop."""
    import dataclasses

    from oellm.reconciler.errors import ReconcileError as _Missing

    if job not in {j.name for j in session.bundle.jobs}:
        raise _Missing(f"no job named {job} in this bundle")
    from oellm.reconciler.metrics_store import latest_metrics

    history = session.history()
    attempts = [dataclasses.asdict(a) for a in history.attempts.get(job, ())]
    # Each attempt's last logged iteration and loss (Megatron jobs).
    logged = {a["attempt"]: latest_metrics(session.records, job, a["attempt"]) for a in attempts}
    dropped = history.dropped.get(job)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job": job,
                    "attempts": [
                        {**a, "metrics": _metrics_json(logged[a["attempt"]])} for a in attempts
                    ],
                    "dropped": dataclasses.asdict(dropped) if dropped else None,
                },
                indent=1,
            )
        )
        return
    table = [
        ("ATTEMPT", "ID", "STATE", "EXIT", "ITERATION", "LAST LOGGED", "STARTED", "ENDED", "CAUSE")
    ]
    for a in attempts:
        found = logged[a["attempt"]]
        table.append(
            (
                str(a["attempt"]),
                a["job_id"] or "-",
                a["final_state"] or a["phase"],
                "-" if a["exit_code"] is None else str(a["exit_code"]),
                "-" if a["iteration"] is None else str(a["iteration"]),
                found.summary() if found else "-",
                a["submitted_at"] or "-",
                a["ended_at"] or "-",
                a["cause"],
            )
        )
    _print_table(table)
    for a in attempts:
        for event in a["events"]:
            click.echo(
                f"  attempt {a['attempt']}: {event['event']} at {event.get('at', '?')}: "
                f"{event.get('line') or event.get('trigger')} -> "
                f"{', '.join(event.get('done', []))}"
            )
        for link in a.get("links", ()):
            after = f" after {link['after']}" if link.get("after") else ""
            click.echo(
                f"  attempt {a['attempt']} link {link['link']}: job "
                f"{link.get('job_id') or '-'} {link.get('state') or link.get('phase')}{after}"
            )
        for word in ("restart_requested", "cancel_requested", "finish_requested"):
            if a[word]:
                click.echo(f"  attempt {a['attempt']}: {word.replace('_', ' ')}: {a[word]}")
    if dropped:
        click.echo(f"  dropped at {dropped.at}: {dropped.reason}")
