"""Training metrics of each attempt, beside its record: the latest iteration, and a bounded
series for curves. Filled each round from what a Megatron job's main log gained.

    <state_dir>/jobs/<job>/attempt-0001.metrics.json    latest iteration, totals, read offsets
    <state_dir>/jobs/<job>/attempt-0001.metrics.jsonl   one line per kept iteration

These files describe, they do not decide: one that cannot be read is ignored (and rebuilt
by reading the log again from its start), never a reason to leave a job alone. A series
line is appended before the offsets that cover it are saved, so a crash in between writes
an iteration twice; readers keep the last line of each iteration, which is also how an
iteration logged again after a restart from a checkpoint replaces the first one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arrays import log_for
from .bundle import Bundle
from .logs import read_new
from .metrics import Sample, parse_line, seq_length
from .model import History, Observation
from .observe import jobs_of
from .record_file import write_atomic
from .records import Records

log = logging.getLogger("oellm.metrics")

# A series holds at most this many lines: past it, every other point is dropped and only
# every `stride`-th iteration is kept from then on, so a 500k-iteration run stays small.
MAX_POINTS = 2000
# Fields of a series line (the curves' data), beside the iteration.
SERIES_FIELDS = (
    "loss",
    "learning_rate",
    "tflops_per_gpu",
    "tokens_per_s",
    "samples_per_s",
    "elapsed_ms",
    "consumed_samples",
    "consumed_tokens",
    "time",
)


@dataclass(frozen=True)
class Metrics:
    """The latest logged iteration of one attempt, with totals over the attempt."""

    job: str
    attempt: int
    iteration: int
    train_iters: int
    loss: float | None = None
    loss_name: str | None = None
    learning_rate: float | None = None
    tflops_per_gpu: float | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    elapsed_ms: float | None = None
    consumed_samples: int | None = None
    consumed_tokens: int | None = None
    time: str | None = None
    skipped_iterations: int = 0
    nan_iterations: int = 0
    restarts: int = 0  # times the log went back to an earlier iteration (a restart in the job)
    # Bookkeeping for the next round.
    offsets: dict[str, int] = field(default_factory=dict)
    seq_length: int | None = None
    stride: int = 1
    points: int = 0
    last_point: int | None = None

    def summary(self) -> str:
        """`it 1200/10000 loss 3.412 182.0 TFLOP/s`, for status tables."""
        parts = [f"it {self.iteration}/{self.train_iters}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.tflops_per_gpu is not None:
            parts.append(f"{self.tflops_per_gpu:.1f} TFLOP/s")
        return " ".join(parts)


def metrics_path(records: Records, job: str, attempt: int) -> Path:
    return records.file_of(job, f"attempt-{attempt:04d}.metrics.json")


def series_path(records: Records, job: str, attempt: int) -> Path:
    return records.file_of(job, f"attempt-{attempt:04d}.metrics.jsonl")


def latest_metrics(records: Records, job: str, attempt: int | None) -> Metrics | None:
    """What the last round saw of an attempt's training, or None (none yet, or unreadable)."""
    if attempt is None:
        return None
    path = metrics_path(records, job, attempt)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Metrics(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("%s: ignored (%s)", path, exc)
        return None


def read_series(records: Records, job: str, attempt: int) -> list[dict[str, Any]]:
    """An attempt's kept iterations in order, the last line of each iteration winning."""
    return _series_file(series_path(records, job, attempt))


def _series_file(path: Path) -> list[dict[str, Any]]:
    by_iteration: dict[int, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            point = json.loads(line)
            by_iteration[int(point["iteration"])] = point
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
    return [by_iteration[k] for k in sorted(by_iteration)]


def advance(
    before: Metrics | None, job: str, attempt: int, samples: Iterable[Sample]
) -> tuple[Metrics | None, list[Sample]]:
    """The attempt's metrics after `samples`, and the samples to add to its series. Pure."""
    current = before
    kept: list[Sample] = []
    for sample in samples:
        fresh = current is None
        if current is None:
            current = Metrics(job, attempt, sample.iteration, sample.train_iters)
        went_back = current.points > 0 and sample.iteration <= (current.last_point or 0)
        keep = (
            current.last_point is None
            or went_back
            or sample.iteration - current.last_point >= current.stride
            or sample.iteration >= sample.train_iters  # the last one is always drawn
        )
        # Logged again: the job resumed from a checkpoint older than its last log line.
        back = not fresh and sample.iteration <= current.iteration
        current = dataclasses.replace(
            current,
            iteration=sample.iteration,
            train_iters=sample.train_iters,
            **{
                name: getattr(sample, name)
                for name in (*SERIES_FIELDS, "loss_name")
                if getattr(sample, name) is not None
            },
            skipped_iterations=current.skipped_iterations + sample.skipped_iterations,
            nan_iterations=current.nan_iterations + sample.nan_iterations,
            restarts=current.restarts + (1 if back else 0),
        )
        if keep:
            kept.append(sample)
            current = dataclasses.replace(
                current, points=current.points + 1, last_point=sample.iteration
            )
    return current, kept


def point(sample: Sample) -> dict[str, Any]:
    data: dict[str, Any] = {"iteration": sample.iteration}
    for name in SERIES_FIELDS:
        value = getattr(sample, name)
        if value is not None:
            data[name] = value
    return data


def update_attempt(
    records: Records, job: str, attempt: int, logs: Iterable[tuple[Path, int]]
) -> Metrics | None:
    """Read what each main log (path, chain link) gained, and record it. I/O."""
    before = latest_metrics(records, job, attempt)
    offsets = dict(before.offsets) if before else {}
    seq = before.seq_length if before else None
    samples: list[Sample] = []
    for path, link in logs:
        lines, offsets[str(path)] = read_new(path, offsets.get(str(path), 0), link=link)
        for line in lines:
            length = seq_length(line.text)
            if length is not None:
                seq = length
                continue
            sample = parse_line(line.text, seq)
            if sample is not None:
                samples.append(sample)
    after, kept = advance(before, job, attempt, samples)
    if after is None:
        return None
    series = series_path(records, job, attempt)
    if kept:
        series.parent.mkdir(parents=True, exist_ok=True)
        with open(series, "a", encoding="utf-8") as handle:
            for sample in kept:
                handle.write(json.dumps(point(sample), sort_keys=True) + "\n")
    if after.points > MAX_POINTS:
        after = _thin(series, after)
    after = dataclasses.replace(after, offsets=offsets, seq_length=seq)
    write_atomic(metrics_path(records, job, attempt), dataclasses.asdict(after))
    return after


def _thin(series: Path, metrics: Metrics) -> Metrics:
    """Halve the points (keeping the last) until at most MAX_POINTS are left, and as often
    double the stride: from now on only every stride-th iteration is added."""
    kept = _series_file(series)
    stride = metrics.stride
    while len(kept) > MAX_POINTS:
        last = kept[-1]
        kept = kept[::2]
        if kept[-1] is not last:
            kept.append(last)
        stride *= 2
    fd, tmp = tempfile.mkstemp(prefix=f".{series.name}.", dir=series.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for data in kept:
            handle.write(json.dumps(data, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, series)
    return dataclasses.replace(metrics, points=len(kept), stride=stride)


def track(bundle: Bundle, history: History, obs: Observation, records: Records) -> list[str]:
    """Record the training metrics of every Megatron attempt that was in flight when `obs`
    was taken. Returns problems as text: metrics never fail a round."""
    problems: list[str] = []
    names = {job.name for job in bundle.jobs}
    for attempt in history.in_flight():
        if attempt.job not in names:
            continue
        job = bundle.job(attempt.job)
        if job.backend != "megatron":
            continue
        running = jobs_of(attempt, obs.by_tag)
        paths: dict[Path, int] = {}
        for link, job_id in running:
            paths[bundle.resolve(log_for(job.log_path, job_id, job.array_index))] = link
        if not paths:
            continue
        try:
            update_attempt(records, job.name, attempt.attempt, paths.items())
        except OSError as exc:
            problems.append(f"{job.name}: metrics not recorded: {exc}")
    return problems


def attempt_metrics(records: Records, job: str, attempts: Iterable[int]) -> Mapping[int, Metrics]:
    found = {}
    for number in attempts:
        metrics = latest_metrics(records, job, number)
        if metrics is not None:
            found[number] = metrics
    return found
