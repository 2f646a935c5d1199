"""Renamed jobs (`moved:` in the config, `compile --moved`) in memory, for `--dry-run`: the
history as the real round sees it after `Records.move`, without writing anything, so the dry
run shows the decisions the round will make rather than a first submission."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from .model import History


def moved(history: History, moves: Mapping[str, str], say: Callable[[str], None]) -> History:
    """`history` with each old name's records under its new name, where `Records.move` would
    carry them: the old job has records and the new one none."""
    if not moves:
        return history
    attempts = dict(history.attempts)
    dropped = dict(history.dropped)
    retries = dict(history.retries)
    damaged = dict(history.damaged)
    known = set(attempts) | set(dropped) | set(retries) | set(damaged)
    for old, new in moves.items():
        if old not in known or new in known:
            continue
        if old in attempts:
            attempts[new] = tuple(dataclasses.replace(a, job=new) for a in attempts.pop(old))
        if old in dropped:
            dropped[new] = dataclasses.replace(dropped.pop(old), job=new)
        if old in retries:
            retries[new] = dataclasses.replace(retries.pop(old), job=new)
        if old in damaged:
            damaged[new] = damaged.pop(old)
        known.add(new)
        say(f"would move the records of {old} to {new}")
    return History(attempts, dropped, damaged, retries)
