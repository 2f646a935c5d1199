"""Site limits (`slurm.limits`, carried by each cluster preset) checked at compile time.

Per job: an explicit `--array` must fit under MaxArraySize, and a pre-timeout signal must not
kill torchrun. Per bundle: the job count against the submit limit, and before anything is
expanded, the sweep's size against that limit and `max_sweep_points`. `signal_lead_seconds` is
for configs to use in `slurm.sbatch.signal`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import Origin, fail
from .interpolate import Resolver
from .load import Path_
from .sweep_size import sweep_size
from .tree import origin_of

MAX_SWEEP_POINTS = 100_000
"""The default for `slurm.limits.max_sweep_points`: past it, compiling takes many minutes."""

# One element of an --array spec: `7`, `0-31` or `1-31:2` (the `%N` throttle is split off first).
_ARRAY_PART = re.compile(r"(\d+)(?:-(\d+)(?::\d+)?)?")


def limits_of(config: Mapping[str, Any]) -> Mapping[str, Any]:
    limits = config["slurm"].get("limits")
    return limits if isinstance(limits, Mapping) else {}


def check_array_spec(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> None:
    """An explicit `slurm.sbatch.array` must not name an index SLURM refuses."""
    spec = config["slurm"]["sbatch"].get("array")
    maximum = limits_of(config).get("max_array_size")
    if not isinstance(spec, (str, int)) or isinstance(spec, bool) or maximum is None:
        return
    highest = max_array_index(str(spec))
    if highest is not None and highest >= maximum:
        raise fail(
            f"array index {highest} is not below the site's MaxArraySize ({maximum})",
            origin_of(origins, ("slurm", "sbatch", "array")),
            key="slurm.sbatch.array",
            hint="split the array, or check slurm.limits.max_array_size against "
            "`scontrol show config | grep MaxArraySize` on the cluster",
        )


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


ANY_MACHINE = "any"


def check_machine(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> None:
    """A container preset made for another machine than the cluster preset (LUMI's SLURM with
    Leonardo's image and binds) would fail only when the job starts, after its wait in the
    queue. Each preset names its machine; `container.machine: any` says the image runs
    anywhere (the generic `apptainer` and `none` presets do)."""
    cluster = config["slurm"].get("machine")
    machine = config["container"].get("machine")
    if cluster is None or machine is None or machine in (ANY_MACHINE, cluster):
        return
    raise fail(
        f"the container preset is made for {machine}, the slurm preset for {cluster}",
        origin_of(origins, ("container", "machine")),
        key="container.machine",
        hint=f"choose container={cluster} (or a container preset made for {cluster}); if this "
        f"image and its binds do work on {cluster}, set container.machine: {ANY_MACHINE}",
    )


def check_signal(config: Mapping[str, Any], origins: Mapping[Path_, Origin], launch: str) -> None:
    """A pre-timeout signal must reach a handler. Without `B:` SLURM signals every process of
    the job steps; under launch per_node that includes torchrun, which has no handler for
    SIGUSR1/SIGUSR2: it dies at once, and srun then stops the ranks in the middle of saving."""
    signal = config["slurm"]["sbatch"].get("signal")
    if launch != "per_node" or config["backend"]["kind"] != "megatron" or not signal:
        return
    text = str(signal).upper()
    if not text.startswith("B:") and text.split("@", 1)[0].removeprefix("SIG") in ("USR1", "USR2"):
        raise fail(
            f"signal {signal!r} would also reach torchrun, which dies on it",
            origin_of(origins, ("slurm", "sbatch", "signal")),
            key="slurm.sbatch.signal",
            hint="under slurm.launch per_node use TERM (torchrun passes it on to the ranks) "
            "with backend.megatron.exit_signal: SIGTERM, or let Megatron stop by itself with "
            "exit_duration_in_mins",
        )


def check_sweep_size(
    base: dict[str, Any], env: Mapping[str, str], origins: Mapping[Path_, Origin], sweep: Any
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
    base: dict[str, Any], env: Mapping[str, str], origins: Mapping[Path_, Origin]
) -> Mapping[str, Any]:
    if "limits" not in (base.get("slurm") or {}):
        return {}
    limits = Resolver(base, origins, env).resolve(("slurm", "limits"))
    return limits if isinstance(limits, Mapping) else {}


def _int(value: Any) -> int | None:
    """An integer limit, or None when it is unset (or not an integer: validation says so)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_bundle_limits(
    base: dict[str, Any],
    env: Mapping[str, str],
    origins: Mapping[Path_, Origin],
    jobs: Sequence[Mapping[str, Any]],
) -> None:
    """The whole bundle against the preset's limits: at most `max_jobs` SLURM jobs, counting
    each link of a chain (an array
    larger than `max_array_size` is split, see `arrays.py`, so it needs no check here).

    Needs every job at once, so the pipeline calls it after rendering (`jobs` are lock entries).
    """
    limits = _resolved_limits(base, env, origins)
    where = origin_of(origins, ("slurm", "limits"))
    max_jobs = limits.get("max_jobs")
    # Each link of a chain is a SLURM job of its own, queued at once behind the one before.
    queued = sum(int(job.get("chain_repeat") or 1) for job in jobs)
    if max_jobs is not None and queued > max_jobs:
        links = f" ({queued} SLURM jobs with their chain links)" if queued != len(jobs) else ""
        raise fail(
            f"the bundle holds {len(jobs)} jobs{links}; the site lets one user queue {max_jobs}",
            where,
            key="slurm.limits.max_jobs",
            hint="split the sweep into several bundles, or raise slurm.limits.max_jobs if your "
            "QoS allows more (`sacctmgr show qos format=name,maxsubmitpu`)",
        )
