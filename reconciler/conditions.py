"""Start and cancel conditions: what facts they need, and their verdict on those facts.

Facts (does a file exist, did a command exit 0) are gathered by observe; the verdict is pure,
so decide can explain it: every condition returns (holds, why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any


def files_needed(conditions: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for cond in conditions:
        kind = cond.get("class_name")
        if kind == "FileExistsCondition":
            yield cond["path"]
        elif kind == "CompositeCondition":
            yield from files_needed(cond["conditions"])


def commands_needed(conditions: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, ...]]:
    for cond in conditions:
        kind = cond.get("class_name")
        if kind == "CommandCondition":
            yield command_key(cond)
        elif kind == "CompositeCondition":
            yield from commands_needed(cond["conditions"])


def command_key(cond: Mapping[str, Any]) -> tuple[str, ...]:
    command = cond["command"]
    return ("bash", "-c", command) if isinstance(command, str) else tuple(command)


def parse_time(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def verdict(
    cond: Mapping[str, Any],
    files: Mapping[str, bool],
    commands: Mapping[tuple[str, ...], bool],
    job_state: Callable[[str], str | None],
    now: datetime,
) -> tuple[bool, str]:
    """Whether one condition holds, and a short reason either way."""
    kind = cond.get("class_name")
    if kind == "FileExistsCondition":
        path = cond["path"]
        return (files.get(path, False), f"file {path} {'exists' if files.get(path) else 'missing'}")
    if kind == "TimeCondition":
        after = parse_time(cond["after"])
        return (now >= after, f"time {'after' if now >= after else 'before'} {cond['after']}")
    if kind == "CommandCondition":
        ok = commands.get(command_key(cond), False)
        return (ok, f"command {' '.join(command_key(cond))!r} {'succeeded' if ok else 'failed'}")
    if kind == "SlurmStateCondition":
        state = job_state(cond["job_name"])
        wanted = cond["state"]
        return (state == wanted, f"job {cond['job_name']} is {state or 'not started'}")
    if kind == "CompositeCondition":
        results = [verdict(c, files, commands, job_state, now) for c in cond["conditions"]]
        combine = all if cond["mode"] == "all" else any
        held = combine(ok for ok, _ in results)
        return (held, f" {cond['mode']} ".join(why for _, why in results) or "no conditions")
    return (False, f"unknown condition {kind!r}")


def all_hold(
    conditions: Iterable[Mapping[str, Any]],
    files: Mapping[str, bool],
    commands: Mapping[tuple[str, ...], bool],
    job_state: Callable[[str], str | None],
    now: datetime,
) -> tuple[bool, str]:
    """A list of conditions holds when every one does; the reason names the first that does not."""
    for cond in conditions:
        ok, why = verdict(cond, files, commands, job_state, now)
        if not ok:
            return False, why
    return True, "conditions hold"


def any_holds(
    conditions: Iterable[Mapping[str, Any]],
    files: Mapping[str, bool],
    commands: Mapping[tuple[str, ...], bool],
    job_state: Callable[[str], str | None],
    now: datetime,
) -> tuple[bool, str]:
    """Cancel conditions: the first that holds cancels."""
    for cond in conditions:
        ok, why = verdict(cond, files, commands, job_state, now)
        if ok:
            return True, why
    return False, ""
