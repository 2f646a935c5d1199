"""Training progress from Megatron-LM's log: one `Sample` per logged iteration.

Pure: text in, records out. Megatron prints one line per `--log-interval` from
`training_log` (megatron/training/training.py), fields separated by `|`:

     [2025-06-01 12:00:00] iteration      100/   10000 | consumed samples: 51200 |
     elapsed time per iteration (ms): 812.3 | throughput per GPU (TFLOP/s/GPU): 187.2 |
     learning rate: 2.999E-04 | global batch size:   512 | lm loss: 3.412345E+00 |
     loss scale: 1.0 | grad norm: 0.812 | number of skipped iterations:   0 |
     number of nan iterations:   0 |

Versions differ in which fields appear (no timestamp before 2024, no throughput without
--log-throughput, energy and power since 2025), so fields are read by name, not position.
Forks that add fields (`samples per second`, `TFLOPs`, `tokens per second`) are read too.
Megatron prints no token counts; with the sequence length (from the argument dump at start,
`  seq_length ........ 4096`), tokens are samples times that length.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

# ` iteration      100/   10000 |`: the slash and the bar tell it from validation lines
# (` validation loss at iteration 100 | ...`) and from checkpoint messages.
_ITERATION = re.compile(r"(?:^|[\s\]:])iteration\s+(\d+)\s*/\s*(\d+)\s*\|")
_STAMP = re.compile(r"\[(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)\]")
_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 _/().-]*?)\s*:\s*(\S+)\s*$")
# `_print_args`: two spaces, the name, dots up to column 48, the value.
_ARG = re.compile(r"^\s*(?:\S+:\s*)?\s*([a-z_][a-z0-9_]*) \.{2,} (\S+)\s*$")

# Field names as Megatron (and its forks) print them -> Sample attribute.
_NAMES = {
    "consumed samples": "consumed_samples",
    "consumed tokens": "consumed_tokens",
    "skipped samples": "skipped_samples",
    "elapsed time per iteration (ms)": "elapsed_ms",
    "throughput per gpu (tflop/s/gpu)": "tflops_per_gpu",
    "tflops": "tflops_per_gpu",
    "learning rate": "learning_rate",
    "global batch size": "global_batch_size",
    "loss scale": "loss_scale",
    "grad norm": "grad_norm",
    "number of skipped iterations": "skipped_iterations",
    "number of nan iterations": "nan_iterations",
    "samples per second": "samples_per_s",
    "tokens per second": "tokens_per_s",
}
# Fields that end in `loss` but are not one.
_NOT_LOSSES = {"loss scale"}


@dataclass(frozen=True)
class Sample:
    """One logged iteration. Counts of skipped and nan iterations are per log interval."""

    iteration: int
    train_iters: int
    time: str | None = None  # the line's timestamp, as printed
    consumed_samples: int | None = None
    consumed_tokens: int | None = None
    skipped_samples: int | None = None
    elapsed_ms: float | None = None
    tflops_per_gpu: float | None = None
    learning_rate: float | None = None
    global_batch_size: int | None = None
    loss: float | None = None  # `lm loss`, else the first loss printed
    loss_name: str | None = None
    loss_scale: float | None = None
    grad_norm: float | None = None
    skipped_iterations: int = 0
    nan_iterations: int = 0
    samples_per_s: float | None = None
    tokens_per_s: float | None = None


_INTS = {
    "consumed_samples",
    "consumed_tokens",
    "skipped_samples",
    "global_batch_size",
    "skipped_iterations",
    "nan_iterations",
}


def parse_line(text: str, seq_length: int | None = None) -> Sample | None:
    """The iteration a training log line reports, or None for any other line."""
    found = _ITERATION.search(text)
    if found is None:
        return None
    stamp = _STAMP.search(text[: found.start() + 1])
    values: dict[str, object] = {}
    losses: list[tuple[str, float]] = []
    for part in text[found.end() :].split("|"):
        field = _FIELD.match(part)
        if field is None:
            continue
        name, raw = field.group(1).lower(), field.group(2)
        number = _number(raw)
        if number is None:
            continue
        attribute = _NAMES.get(name)
        if attribute is not None:
            values[attribute] = int(number) if attribute in _INTS else number
        elif name.endswith("loss") and name not in _NOT_LOSSES:
            losses.append((name, number))
    if losses:
        name, value = next((x for x in losses if x[0] == "lm loss"), losses[0])
        values["loss"], values["loss_name"] = value, name
    sample = Sample(
        iteration=int(found.group(1)),
        train_iters=int(found.group(2)),
        time=stamp.group(1) if stamp else None,
        **values,  # type: ignore[arg-type]
    )
    return _derived(sample, seq_length)


def _derived(sample: Sample, seq_length: int | None) -> Sample:
    """Rates and token counts Megatron does not print but its fields give."""
    changes: dict[str, object] = {}
    seconds = sample.elapsed_ms / 1000.0 if sample.elapsed_ms else None
    samples_per_s = sample.samples_per_s
    if samples_per_s is None and seconds and sample.global_batch_size:
        samples_per_s = changes["samples_per_s"] = sample.global_batch_size / seconds
    if seq_length:
        if sample.tokens_per_s is None and samples_per_s is not None:
            changes["tokens_per_s"] = samples_per_s * seq_length
        if sample.consumed_tokens is None and sample.consumed_samples is not None:
            changes["consumed_tokens"] = sample.consumed_samples * seq_length
    return dataclasses.replace(sample, **changes) if changes else sample  # type: ignore[arg-type]


def _number(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    # `nan` and `inf` are not JSON; Megatron counts such iterations in their own field.
    return value if math.isfinite(value) else None


def seq_length(text: str) -> int | None:
    """The sequence length from the argument dump Megatron prints at start, or None."""
    found = _ARG.match(text)
    if found is None or found.group(1) != "seq_length":
        return None
    value = found.group(2)
    return int(value) if value.isdigit() else None


def parse(lines: list[str] | tuple[str, ...], seq: int | None = None) -> list[Sample]:
    """Every iteration in `lines`, in order (a restart may log an iteration again)."""
    found: list[Sample] = []
    for line in lines:
        length = seq_length(line)
        if length is not None:
            seq = length
            continue
        sample = parse_line(line, seq)
        if sample is not None:
            found.append(sample)
    return found
