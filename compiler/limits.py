"""Site limits (`slurm.limits`, carried by each cluster preset) checked at compile time.

Per bundle: the job count against the submit limit, and before anything is expanded, the
sweep's size against that limit and `max_sweep_points`. The per-job checks of limits (an
explicit `--array` under MaxArraySize) are in `checks.py`. `signal_lead_seconds` is
for configs to use in `slurm.sbatch.signal`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from oellm.lockfile.model import LockJob

from .errors import Origin, fail
from .interpolate import Interpolator
from .sweep_size import sweep_size
from .tree import KeyPath, origin_of

MAX_SWEEP_POINTS = 100_000
"""The default for `slurm.limits.max_sweep_points`: past it, compiling takes many minutes."""

# One element of an --array spec: `7`, `0-31` or `1-31:2` (the `%N` throttle is split off first).
_ARRAY_PART = re.compile(r"(\d+)(?:-(\d+)(?::\d+)?)?")


def limits_of(config: Mapping[str, Any]) -> Mapping[str, Any]:
    limits = config["slurm"].get("limits")
    return limits if isinstance(limits, Mapping) else {}


def max_array_index(spec: str) -> int | None:
    """The highest index of an --array spec, or None when the spec is not one we read
    (sbatch then judges it itself)."""
    highest: int | None = None
    for part in spec.split("%", 1)[0].split(","):
        match = _ARRAY_PART.fullmatch(part.strip())
        if match is None:
            return None
        top = int(match.group(2) or match.group(1))
        highest = top if highest is None else max(highest, top)
    return highest


def check_sweep_size(
    base: dict[str, Any], env: Mapping[str, str], origins: Mapping[KeyPath, Origin], sweep: Any
) -> None:
    """Refuse a sweep too large to expand, counted from its factors, before it is expanded."""
    size = sweep_size(sweep)
    if size.points <= 1:
        return
    limits = _resolved_limits(base, env, origins)
    cap = _int(limits.get("max_sweep_points")) or MAX_SWEEP_POINTS
    where = origin_of(origins, ("sweep",))
    if size.points > cap:
        raise fail(
            f"the sweep has {size.points:,} points ({size}); the limit is {cap:,}",
            where,
            key="sweep",
            hint="sweep fewer values, split the sweep into several experiments, or raise "
            "slurm.limits.max_sweep_points",
        )
    # Without a filter every point is a job, so the job limit can be judged now; with one,
    # only the expanded bundle can tell (check_bundle_limits).
    max_jobs = _int(limits.get("max_jobs"))
    if max_jobs is not None and not size.filtered and size.points > max_jobs:
        raise fail(
            f"the sweep has {size.points:,} points ({size}), each a job; the site lets one "
            f"user queue {max_jobs}",
            where,
            key="slurm.limits.max_jobs",
            hint="split the sweep into several bundles, or raise slurm.limits.max_jobs if your "
            "QoS allows more (`sacctmgr show qos format=name,maxsubmitpu`)",
        )


def _resolved_limits(
    base: dict[str, Any], env: Mapping[str, str], origins: Mapping[KeyPath, Origin]
) -> Mapping[str, Any]:
    if "limits" not in (base.get("slurm") or {}):
        return {}
    limits = Interpolator(base, origins, env).resolve(("slurm", "limits"))
    return limits if isinstance(limits, Mapping) else {}


def _int(value: Any) -> int | None:
    """An integer limit, or None when it is unset (or not an integer: validation says so)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_bundle_limits(
    base: dict[str, Any],
    env: Mapping[str, str],
    origins: Mapping[KeyPath, Origin],
    jobs: Sequence[LockJob],
) -> int | None:
    """The whole bundle against the preset's limits: at most `max_jobs` SLURM jobs, counting
    each link of a chain (an array
    larger than `max_array_size` is split, see `array_groups.py`, so it needs no check here).

    Needs every job at once, so the pipeline calls it after rendering (`jobs` are lock entries).
    Returns `max_jobs` (None: unset), which the lockfile carries for the reconciler's budget.
    """
    limits = _resolved_limits(base, env, origins)
    where = origin_of(origins, ("slurm", "limits"))
    max_jobs = limits.get("max_jobs")
    # Each link of a chain is a SLURM job of its own, queued at once behind the one before.
    queued = sum((job.chain_repeat or 1) for job in jobs)
    if max_jobs is not None and queued > max_jobs:
        links = f" ({queued} SLURM jobs with their chain links)" if queued != len(jobs) else ""
        raise fail(
            f"the bundle holds {len(jobs)} jobs{links}; the site lets one user queue {max_jobs}",
            where,
            key="slurm.limits.max_jobs",
            hint="split the sweep into several bundles, or raise slurm.limits.max_jobs if your "
            "QoS allows more (`sacctmgr show qos format=name,maxsubmitpu`)",
        )
    return _int(max_jobs)
