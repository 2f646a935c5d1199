"""Site limits (`slurm.limits`, carried by each cluster preset) checked at compile time.

Per job: an explicit `--array` must fit under MaxArraySize, and a pre-timeout signal must not
kill torchrun. Per bundle: the job count against the submit limit, and each array stage
against MaxArraySize. `signal_lead_seconds` is for configs to use in `slurm.sbatch.signal`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import Origin, fail
from .interpolate import Resolver
from .load import Path_
from .tree import origin_of

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


def check_bundle_limits(
    base: dict[str, Any],
    env: Mapping[str, str],
    origins: Mapping[Path_, Origin],
    jobs: Sequence[Mapping[str, Any]],
) -> None:
    """The whole bundle against the preset's limits: at most `max_jobs` jobs, and at most
    `max_array_size` jobs in a stage that is submitted as one array.

    Needs every job at once, so the pipeline calls it after rendering (`jobs` are lock entries).
    """
    if "limits" not in (base.get("slurm") or {}):
        return
    limits = Resolver(base, origins, env).resolve(("slurm", "limits"))
    if not isinstance(limits, Mapping):
        return
    where = origin_of(origins, ("slurm", "limits"))
    max_jobs = limits.get("max_jobs")
    if max_jobs is not None and len(jobs) > max_jobs:
        raise fail(
            f"the bundle holds {len(jobs)} jobs; the site lets one user queue {max_jobs}",
            where,
            key="slurm.limits.max_jobs",
            hint="split the sweep into several bundles, or raise slurm.limits.max_jobs if your "
            "QoS allows more (`sacctmgr show qos format=name,maxsubmitpu`)",
        )
    max_array = limits.get("max_array_size")
    if max_array is None:
        return
    per_stage = Counter(str(job.get("stage")) for job in jobs if job.get("array"))
    for stage, count in sorted(per_stage.items()):
        if count > max_array:
            raise fail(
                f"stage '{stage}' would be an array of {count} tasks; the site's "
                f"MaxArraySize allows {max_array}",
                where,
                key="slurm.limits.max_array_size",
                hint="set slurm.array false for this sweep, or split the stage",
            )
