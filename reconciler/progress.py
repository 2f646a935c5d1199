"""What `oellm reconcile --wait` prints: one time-stamped line per round that changed
something (`[12:03:05] round 7: 3 submitted, 1 completed, 2 failed; 14 running, 20 pending`),
a heartbeat line after a long quiet spell, and a summary at the end. Pure: the caller passes
the round's actions, what it did, the jobs' states and the time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from .actions import Action, Adopt, Cancel, Drop, Finish, Recover

# A quiet round prints nothing, but after this long without a line one says it still runs.
HEARTBEAT_S = 600.0
_LIVE = ("RUNNING", "PENDING")


def changes(actions: Sequence[Action], acted: Iterable[str]) -> Counter[str]:
    """What a round did, by kind: submitted (from what was carried out, so a refused
    submission does not count), completed, failed (any other end), cancelled, recovered."""
    found: Counter[str] = Counter()
    for line in acted:
        if line.startswith("submitted "):
            found["submitted"] += 1
    for action in actions:
        match action:
            case Finish():
                found["completed" if action.state == "COMPLETED" else "failed"] += 1
            case Cancel():
                found["cancelled"] += 1
            case Recover() | Adopt():
                found["recovered"] += 1
            case Drop():
                found["dropped"] += 1
    return found


def round_line(number: int, done: Counter[str], states: Counter[str], now: datetime) -> str:
    order = ("submitted", "completed", "failed", "cancelled", "recovered", "dropped")
    did = ", ".join(f"{done[k]} {k}" for k in order if done.get(k)) or "no change"
    live = ", ".join(f"{states[s]} {s.lower()}" for s in _LIVE if states.get(s))
    return f"[{now:%H:%M:%S}] round {number}: {did}" + (f"; {live}" if live else "")


def final_line(rounds: int, seconds: float, states: Counter[str]) -> str:
    shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda kv: -kv[1]))
    minutes, secs = divmod(int(seconds), 60)
    took = f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    plural = "s" if rounds != 1 else ""
    return f"done after {rounds} round{plural} in {took}: {shown}"
