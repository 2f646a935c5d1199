"""What the soak tallies while it runs, the summary it ends with (also as JSON), and the table
it prints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import soak_audit

SETTLED = ("COMPLETED", "FAILED", "CANCELLED", "DROPPED")


@dataclass
class Tally:
    rounds: int = 0
    settle_rounds: int = 0
    oellm_runs: int = 0
    kills: int = 0  # SIGKILLs that hit a live round
    crash_rounds: int = 0
    crashes: int = 0  # of those, rounds that reached their crash point
    concurrent_rounds: int = 0
    concurrent_processes: int = 0
    stale_locks: int = 0
    empty_locks: int = 0
    stalled_rounds: int = 0
    record_deletions: int = 0
    state_dir_deletions: int = 0
    recompiles: int = 0
    recompiles_mid_round: int = 0
    moves: int = 0
    exit_codes: Counter[str] = field(default_factory=Counter)
    exit3: list[dict[str, Any]] = field(default_factory=list)
    hung: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    move_failures: list[str] = field(default_factory=list)


def summary(
    tally: Tally,
    names: set[str],
    found: soak_audit.Audit,
    rows: list[dict[str, Any]],
    rounds_at: Callable[[datetime | None], str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Everything the soak counted; `rows` are `oellm status --json`'s at the end, `names` the
    jobs of the bundle, `rounds_at` names the rounds that ran at an instant."""
    shown = {row["job"] for row in rows}
    lost = [
        f"{row['job']}: {row['state']} ({row.get('reason', '')})"
        for row in rows
        if row["state"] not in SETTLED
    ]
    lost += [f"{name}: not in the final status" for name in sorted(names - shown)]

    def scenario(problem: soak_audit.Problem) -> str:
        ordered = sorted(problem.involved, key=lambda sub: sub.row.submit or datetime.max)
        where = [f"{sub.row.job_id} in {rounds_at(sub.row.submit)}" for sub in ordered]
        return f"{problem.text}\n    submitted: " + "\n    submitted: ".join(where)

    return {
        "rounds": tally.rounds,
        "settle_rounds": tally.settle_rounds,
        "jobs": len(names),
        "oellm_runs": tally.oellm_runs,
        "kills": tally.kills,
        "crash_rounds": tally.crash_rounds,
        "crash_points_reached": tally.crashes,
        "concurrent_rounds": tally.concurrent_rounds,
        "concurrent_processes": tally.concurrent_processes,
        "stale_locks": tally.stale_locks,
        "empty_locks": tally.empty_locks,
        "stalled_lock_rounds": tally.stalled_rounds,
        "record_deletions": tally.record_deletions,
        "state_dir_deletions": tally.state_dir_deletions,
        "recompiles": tally.recompiles,
        "recompiles_mid_round": tally.recompiles_mid_round,
        "moves": tally.moves,
        "slurm_jobs": len({sub.base for sub in found.submissions}),
        "submissions": len(found.submissions),
        "keys": sorted(found.keys),
        # Jobs, not findings: one job submitted twice trips several checks at once.
        "duplicates": len({sub.job for p in found.duplicates for sub in p.involved}),
        "live_at_once": len({sub.job for p in found.overlaps for sub in p.involved}),
        "lost": len(lost),
        "not_completed": sum(1 for row in rows if row["state"] != "COMPLETED"),
        "exit3": len(tally.exit3),
        "hung": len(tally.hung),
        "unexpected_exits": len(tally.unexpected),
        "move_failures": len(tally.move_failures),
        "exit_codes": dict(sorted(tally.exit_codes.items())),
        **extra,
        "details": {
            "duplicates": [scenario(p) for p in found.duplicates],
            "live_at_once": [scenario(p) for p in found.overlaps],
            "lost": lost,
            "not_completed": [
                f"{row['job']}: {row['state']} ({row.get('reason', '')})"
                for row in rows
                if row["state"] != "COMPLETED"
            ],
            "exit3": [_brief(e) for e in tally.exit3],
            "hung": [_brief(e) for e in tally.hung],
            "unexpected_exits": [_brief(e) for e in tally.unexpected],
            "move_failures": tally.move_failures,
            "unmatched_array_tasks": found.unmatched,
        },
    }


def _brief(entry: dict[str, Any]) -> str:
    return (
        f"round {entry['round']} {entry['what']} env={entry['env']} exit {entry['exit']}: "
        f"{entry['stderr'].strip()[-1500:]}"
    )


def print_table(result: dict[str, Any]) -> None:
    r = result

    def pair(first: str, second: str, form: str = "{} / {}") -> str:
        return form.format(r[first], r[second])

    lines: list[tuple[str, object]] = [
        ("seed", r["seed"]),
        ("rounds (+ settle rounds)", pair("rounds", "settle_rounds", "{} (+{})")),
        ("oellm processes", r["oellm_runs"]),
        ("SIGKILLs at a random instant", r["kills"]),
        ("crash points reached / tried", pair("crash_points_reached", "crash_rounds")),
        ("started together (rounds)", pair("concurrent_processes", "concurrent_rounds", "{} ({})")),
        ("stale / empty locks planted", pair("stale_locks", "empty_locks")),
        ("rounds with stalled lock writes", r["stalled_lock_rounds"]),
        ("record / state dir deletions", pair("record_deletions", "state_dir_deletions")),
        ("recompiles (while a round ran)", pair("recompiles", "recompiles_mid_round", "{} ({})")),
        ("output dir moves", r["moves"]),
        ("jobs", r["jobs"]),
        ("SLURM jobs (rows, tasks apart)", pair("slurm_jobs", "submissions", "{} ({})")),
        ("duplicates", r["duplicates"]),
        ("one job live twice at once", r["live_at_once"]),
        ("lost", r["lost"]),
        ("settled but not COMPLETED", r["not_completed"]),
        ("exit 3 / traceback", r["exit3"]),
        ("hung", r["hung"]),
        ("other unexpected exits", r["unexpected_exits"]),
        ("SLURM ids in no record", r["untracked"]),
        ("recorded ids not in SLURM", r["missing_in_slurm"]),
        ("settle time", f"{r['settle_seconds']:.0f} s"),
        ("wall time", f"{r['wall_seconds']:.0f} s"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in lines)
    print()
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    print(f"{'exit codes':<{width}}  {result['exit_codes']}")
    for kind, items in result["details"].items():
        for item in items:
            print(f"{kind}: {item}")
