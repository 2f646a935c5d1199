"""What `oellm report` shows, gathered from a bundle and its state dir: each job's curves (the
metrics series of its attempts), its last iteration and loss, and the GPU-hours it used.

GPU-hours are measured, not asked for: each SLURM job of an attempt counts from the time its
script wrote `<output_dir>/.oellm/<id>.started` to the time it wrote `<id>.exit` (the file's
modification time; without one, when the reconciler recorded the end, or now while it runs),
times the GPUs its script's `#SBATCH` lines ask for. Jobs that never started count zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oellm.reconciler.bundle import Bundle, load_bundle
from oellm.reconciler.metrics_store import latest_metrics, read_series
from oellm.reconciler.model import Attempt, LockJob
from oellm.reconciler.records import Records
from oellm.resources import ask, directives
from oellm.svgplot import CATEGORICAL, sequential


@dataclass(frozen=True)
class JobReport:
    name: str
    stage: str | None
    params: Mapping[str, Any]
    color: str
    state: str
    attempts: int
    gpus: int
    hours: float  # wall-clock hours its SLURM jobs ran, over all attempts
    iteration: int | None = None
    train_iters: int | None = None
    loss: float | None = None
    tflops_per_gpu: float | None = None
    tokens_per_s: float | None = None
    loss_curve: Sequence[tuple[float, float]] = ()
    throughput_curve: Sequence[tuple[float, float]] = ()

    @property
    def gpu_hours(self) -> float:
        return self.hours * self.gpus


@dataclass(frozen=True)
class SweepReport:
    project: str
    bundle_id: str
    colour_keys: tuple[str, ...]  # the swept values the colours follow
    jobs: tuple[JobReport, ...]
    throughput: str  # what the throughput curves show: "TFLOP/s per GPU" or "tokens/s"
    problems: tuple[str, ...] = field(default_factory=tuple)  # records left out, and why

    @property
    def stages(self) -> list[str | None]:
        return list(dict.fromkeys(job.stage for job in self.jobs))

    @property
    def has_metrics(self) -> bool:
        return any(job.loss_curve or job.iteration is not None for job in self.jobs)

    @property
    def gpu_hours(self) -> float:
        return sum(job.gpu_hours for job in self.jobs)

    @property
    def hours(self) -> float:
        return sum(job.hours for job in self.jobs)


def colour_keys(jobs: Sequence[LockJob]) -> tuple[str, ...]:
    """The swept keys whose values colour the curves: those that vary across the sweep, less
    those that only follow the stage (a stage's own `train_iters`), so that the jobs of one
    sweep point have one colour in every stage."""
    keys = sorted({k for job in jobs for k in job.params})
    varying = [k for k in keys if len({_text(job.params.get(k)) for job in jobs}) > 1]
    by_stage: dict[str | None, list[LockJob]] = {}
    for job in jobs:
        by_stage.setdefault(job.stage, []).append(job)
    return tuple(
        k
        for k in varying
        if k != "stage"
        and any(len({_text(j.params.get(k)) for j in group}) > 1 for group in by_stage.values())
    )


def colours(jobs: Sequence[LockJob], keys: Sequence[str]) -> dict[str, str]:
    """One colour per combination of `keys`' values. One numeric key: an ordered scale by the
    values' rank (so an lr sweep goes dark to light); otherwise distinct colours."""
    values: dict[str, tuple[Any, ...]] = {
        job.name: tuple(job.params.get(k) for k in keys) for job in jobs
    }
    distinct = sorted(set(map(_text_tuple, values.values())))
    numeric = len(keys) == 1 and all(
        isinstance(v[0], (int, float)) and not isinstance(v[0], bool) for v in values.values()
    )
    if not keys:
        return {job.name: CATEGORICAL[i % len(CATEGORICAL)] for i, job in enumerate(jobs)}
    if numeric:
        ordered: list[float] = sorted({v[0] for v in values.values()})
        rank = {value: i for i, value in enumerate(ordered)}
        top = max(len(ordered) - 1, 1)
        # Stop short of the scale's pale yellow end: it is hard to see on white.
        return {name: sequential(0.9 * rank[v[0]] / top) for name, v in values.items()}
    index = {value: i for i, value in enumerate(distinct)}
    return {
        name: CATEGORICAL[index[_text_tuple(v)] % len(CATEGORICAL)] for name, v in values.items()
    }


def gather(path: Path, now: datetime | None = None) -> SweepReport:
    bundle = load_bundle(path, check_scripts=False)
    records = Records(bundle.state_path)
    history = records.load()
    now = now or datetime.now(timezone.utc)
    keys = colour_keys(bundle.jobs)
    palette = colours(bundle.jobs, keys)
    jobs = []
    any_tflops = False
    for job in bundle.jobs:
        attempts = history.attempts.get(job.name, ())
        report = _job(bundle, records, job, attempts, palette[job.name], now)
        any_tflops = any_tflops or report.tflops_per_gpu is not None
        jobs.append(report)
    problems = tuple(history.damaged.values())
    return SweepReport(
        bundle.project,
        bundle.bundle_id,
        keys,
        tuple(jobs),
        "TFLOP/s per GPU" if any_tflops else "tokens/s",
        problems,
    )


def _job(
    bundle: Bundle,
    records: Records,
    job: LockJob,
    attempts: Sequence[Attempt],
    color: str,
    now: datetime,
) -> JobReport:
    gpus = _gpus(bundle, job)
    hours = sum(_hours(bundle, job, a, now) for a in attempts)
    # One curve over all attempts: a later attempt's iteration replaces an earlier one's
    # (it resumed from a checkpoint before the end of the last).
    merged: dict[int, dict[str, Any]] = {}
    latest = None
    for attempt in attempts:
        for point in read_series(records, job.name, attempt.attempt):
            merged[int(point["iteration"])] = point
        latest = latest_metrics(records, job.name, attempt.attempt) or latest
    points = [merged[k] for k in sorted(merged)]
    loss = [(float(p["iteration"]), float(p["loss"])) for p in points if "loss" in p]
    kind = "tflops_per_gpu" if any("tflops_per_gpu" in p for p in points) else "tokens_per_s"
    throughput = [(float(p["iteration"]), float(p[kind])) for p in points if kind in p]
    last = attempts[-1] if attempts else None
    state = (
        "NOT_SUBMITTED"
        if last is None
        else last.final_state or ("RUNNING" if last.phase == "submitted" else last.phase.upper())
    )
    return JobReport(
        job.name,
        job.stage,
        job.params,
        color,
        state,
        len(attempts),
        gpus,
        hours,
        latest.iteration if latest else None,
        latest.train_iters if latest else None,
        latest.loss if latest else None,
        latest.tflops_per_gpu if latest else None,
        latest.tokens_per_s if latest else None,
        loss,
        throughput,
    )


def _gpus(bundle: Bundle, job: LockJob) -> int:
    group = bundle.array_of(job)
    script = bundle.path / (group.script if group else job.script)
    try:
        return ask(directives(script.read_text(encoding="utf-8"))).gpus
    except OSError:
        return 0


def _hours(bundle: Bundle, job: LockJob, attempt: Attempt, now: datetime) -> float:
    ids = [link.job_id for link in attempt.links if link.job_id] or (
        [attempt.job_id] if attempt.job_id else []
    )
    folder = bundle.resolve(job.output_dir) / ".oellm"
    total = 0.0
    for job_id in ids:
        start = _stamp(folder / f"{job_id}.started")
        if start is None:
            continue
        end = _modified(folder / f"{job_id}.exit")
        if end is None and attempt.ended_at:
            end = datetime.fromisoformat(attempt.ended_at)
        end = end or now
        total += max((end - start).total_seconds(), 0.0) / 3600
    return total


def _stamp(path: Path) -> datetime | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (OSError, ValueError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _modified(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
    except OSError:
        return None


def _text(value: Any) -> str:
    return repr(value)


def _text_tuple(values: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(map(_text, values))
