"""What a bundle asks of the cluster: node-hours and GPU-hours, read from each script's
`#SBATCH` lines (nodes, time limit, GPUs) and the lockfile's `chain_repeat`. Time limits are
upper bounds and restarts are not counted, so this is what one pass of the sweep may use at most.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from oellm.lockfile.model import Lock

_DIRECTIVE = re.compile(r"^#SBATCH\s+(--?[A-Za-z][\w-]*)(?:[=\s]\s*(.*?))?\s*$")


def directives(script: str) -> list[tuple[str, str | None]]:
    """The `#SBATCH` options of a script, in order: (long name without dashes, value). sbatch
    reads them only up to the first command line."""
    out: list[tuple[str, str | None]] = []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not stripped.startswith("#SBATCH")):
            continue
        if not stripped.startswith("#SBATCH"):
            break
        match = _DIRECTIVE.match(stripped)
        if match:
            name = {"-N": "nodes", "-t": "time", "-G": "gpus"}.get(match[1], match[1].lstrip("-"))
            out.append((name, match[2]))
    return out


def minutes(limit: str) -> float | None:
    """SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; None for `infinite`/unknown."""
    text = limit.strip()
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None
    numbers = [int(p) for p in parts]
    if days:
        hours, mins, secs = (numbers + [0, 0])[:3]
    elif len(numbers) == 1:
        hours, mins, secs = 0, numbers[0], 0
    elif len(numbers) == 2:
        hours, mins, secs = 0, numbers[0], numbers[1]
    else:
        hours, mins, secs = numbers
    return days * 1440 + hours * 60 + mins + secs / 60


@dataclass(frozen=True)
class Ask:
    """One job's request: nodes, GPUs over all its nodes, time limit (None: not set)."""

    nodes: int
    gpus: int
    minutes: float | None


def ask(options: Iterable[tuple[str, str | None]]) -> Ask:
    found = dict(options)
    nodes = _first_int(found.get("nodes")) or 1
    per_node = _gpu_count(found.get("gpus-per-node")) or _gres_gpus(found.get("gres"))
    total = _gpu_count(found.get("gpus"))
    gpus = total if total else per_node * nodes
    limit = found.get("time")
    return Ask(nodes, gpus, minutes(limit) if limit else None)


def _first_int(text: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", text or "")
    return int(match[1]) if match else None


def _gpu_count(text: str | None) -> int:
    """`4`, `a100:4` or `gpu:a100:4`: the count is the last number."""
    if not text:
        return 0
    last = text.split(",")[0].split(":")[-1]
    return int(last) if last.isdigit() else 0


def _gres_gpus(text: str | None) -> int:
    for item in (text or "").split(","):
        parts = item.split(":")
        if parts[0] == "gpu":
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return 0


@dataclass(frozen=True)
class Totals:
    jobs: int
    node_hours: float
    gpu_hours: float
    unlimited: tuple[str, ...]  # jobs without a time limit: not counted

    def line(self) -> str:
        text = (
            f"resources: {_hours(self.node_hours)} node-hours, {_hours(self.gpu_hours)} "
            f"GPU-hours at most ({self.jobs} job{'s' if self.jobs != 1 else ''} x nodes x time "
            "limit x chain_repeat; restarts not counted)"
        )
        if self.unlimited:
            text += f"; {len(self.unlimited)} job(s) without --time not counted"
        return text


def _hours(value: float) -> str:
    return f"{value:,.1f}"


def totals(lock: Lock, script: Callable[[str], str]) -> Totals:
    """Sum over the lockfile's jobs; `script` gives a script's text by its bundle path. A job of
    an array takes its directives from the array's shared script, which sbatch reads."""
    arrays = lock.arrays
    seen: dict[str, Ask] = {}
    node_hours = gpu_hours = 0.0
    unlimited: list[str] = []
    for job in lock.jobs:
        group = arrays.get(job.array_group) if job.array_group else None
        path = group.script if group else job.script
        request = seen.get(path)
        if request is None:
            request = seen[path] = ask(directives(script(path)))
        if request.minutes is None:
            unlimited.append(job.name)
            continue
        hours = request.minutes / 60 * job.chain_repeat
        node_hours += request.nodes * hours
        gpu_hours += request.gpus * hours
    return Totals(len(lock.jobs), node_hours, gpu_hours, tuple(unlimited))
