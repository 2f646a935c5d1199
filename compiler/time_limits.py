"""Wall-time limits of a job: `slurm.debug` clamps `--time`, and a `--time` above the chosen
partition's (or QoS's) maximum is a compile error rather than a job sbatch refuses at submit.

The presets list each partition's maximum under `slurm.limits.max_time` and each QoS's under
`slurm.limits.max_time_qos`. A QoS that has a listed maximum decides (sites such as Leonardo
and MareNostrum 5 set the limit by QoS, and a QoS may allow more than the partition); else the
partition's does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import Origin, Problem
from .tree import KeyPath, origin_of

DEBUG_SECONDS = 30 * 60
# sbatch's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_DAYS = re.compile(r"(\d+)-(\d+)(?::(\d+))?(?::(\d+))?")
_CLOCK = re.compile(r"(\d+)(?::(\d+))?(?::(\d+))?")
_UNLIMITED = frozenset({"unlimited", "infinite"})


def seconds(value: Any) -> int | None:
    """A SLURM time in seconds; None for a form this does not read (sbatch judges it) or
    for UNLIMITED/INFINITE."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value * 60  # a bare number is minutes
    text = str(value).strip()
    if text.lower() in _UNLIMITED:
        return None
    days = _DAYS.fullmatch(text)
    if days:
        d, h, m, s = (int(g) if g else 0 for g in days.groups())
        return ((d * 24 + h) * 60 + m) * 60 + s
    clock = _CLOCK.fullmatch(text)
    if not clock:
        return None
    parts = [int(g) for g in clock.groups() if g is not None]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def clock(total: int) -> str:
    """Seconds as sbatch's H:M:S (hours may pass 24)."""
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


def _maximum(config: Mapping[str, Any]) -> tuple[int, str, KeyPath] | None:
    """The chosen QoS's or partition's maximum: (seconds, what it is, where it is set)."""
    limits = config["slurm"].get("limits") or {}
    sbatch = config["slurm"]["sbatch"]
    for kind, key, table in (
        ("QoS", "qos", "max_time_qos"),
        ("partition", "partition", "max_time"),
    ):
        name = sbatch.get(key)
        listed = limits.get(table) or {}
        if name is None or str(name) not in listed:
            continue
        total = seconds(listed[str(name)])
        if total is not None:
            return total, f"{kind} {name}", ("slurm", "limits", table, str(name))
    return None


def clamp_debug_time(config: dict[str, Any]) -> dict[str, Any]:
    """The config with `--time` clamped under `slurm.debug`: the debug partitions and QoS are
    for short tries, at most 30 minutes, less where the site allows less.

    Returns a new mapping when the time changes, never changing `config`: parts of a job's
    config may be shared with other jobs (see `value_sizes.static_parts`)."""
    slurm = config["slurm"]
    if slurm.get("debug") is not True:
        return config
    sbatch = slurm["sbatch"]
    requested = seconds(sbatch.get("time"))
    maximum = _maximum(config)
    ceiling = min(DEBUG_SECONDS, maximum[0] if maximum else DEBUG_SECONDS)
    clamped = ceiling if requested is None else min(requested, ceiling)
    if clamped == requested:
        return config
    return {**config, "slurm": {**slurm, "sbatch": {**sbatch, "time": clock(clamped)}}}


def check_time_limit(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """A `--time` above the site's maximum (a debug job's is clamped instead)."""
    slurm = config["slurm"]
    if slurm.get("debug") is True:
        return
    given = slurm["sbatch"].get("time")
    requested = seconds(given)
    maximum = _maximum(config)
    if requested is None or maximum is None or requested <= maximum[0]:
        return
    total, what, where = maximum
    yield Problem(
        f"time limit {given} is above the {what} maximum of {clock(total)}",
        origin_of(origins, ("slurm", "sbatch", "time")),
        key="slurm.sbatch.time",
        hint=f"ask for at most {clock(total)} and let a chain continue the run "
        "(job.chain_repeat), choose another partition or QoS, or correct "
        f"slurm.limits.{'.'.join(map(str, where[2:]))} if the site allows more",
    )
