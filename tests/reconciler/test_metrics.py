"""Megatron-LM's training log lines, as three versions print them, read into samples; every
other line (arguments, validation, checkpoints, memory reports, srun errors) is not one."""

from __future__ import annotations

from pathlib import Path

import pytest

from oellm.reconciler.metrics import parse, parse_line, seq_length

LOGS = Path(__file__).parent / "megatron_logs"


def lines(name: str) -> list[str]:
    return (LOGS / name).read_text(encoding="utf-8").splitlines()


def test_2020_lines_without_timestamp_or_throughput() -> None:
    samples = parse(lines("megatron-2020.log"))
    assert [s.iteration for s in samples] == [100, 200, 300]
    first = samples[0]
    assert (first.train_iters, first.time, first.tflops_per_gpu) == (300, None, None)
    assert (first.consumed_samples, first.global_batch_size) == (25600, 256)
    assert (first.loss, first.loss_name, first.learning_rate) == (6.512345, "lm loss", 3e-4)
    # The argument dump gives the sequence length: tokens are samples times 2048.
    assert first.consumed_tokens == 25600 * 2048
    assert first.samples_per_s == pytest.approx(256.0)
    assert first.tokens_per_s == pytest.approx(256.0 * 2048)
    assert [s.skipped_iterations for s in samples] == [2, 0, 0]
    assert [s.nan_iterations for s in samples] == [0, 1, 0]


def test_2024_lines_with_throughput_and_a_restart_in_the_middle() -> None:
    samples = parse(lines("megatron-2024.log"))
    # The job died after iteration 30 and resumed from the checkpoint of 20: 30 comes twice.
    assert [s.iteration for s in samples] == [10, 20, 30, 30, 40]
    assert [s.loss for s in samples] == [10.5, 9.1, 8.0, 7.9, 7.2]
    assert samples[0].tflops_per_gpu == 180.5 and samples[3].tflops_per_gpu == 160.0
    assert samples[0].time == "2024-09-06 08:01:00"
    assert samples[1].grad_norm == pytest.approx(3.21)
    assert samples[-1].consumed_tokens == 20480 * 4096


def test_2026_lines_with_rank_labels_energy_and_more_losses() -> None:
    samples = parse(lines("megatron-2026.log"))
    assert [s.iteration for s in samples] == [1, 2]
    second = samples[1]
    # `lm loss` is the loss, whichever other losses (MTP, MoE balancing) come first or after.
    assert (second.loss, second.loss_name) == (11.1, "lm loss")
    assert second.time == "2026-08-22 15:22:24.200000"
    assert (second.tflops_per_gpu, second.train_iters) == (410.9, 500000)
    assert (second.skipped_iterations, second.nan_iterations) == (1, 1)
    assert second.tokens_per_s == pytest.approx(1024 / 2.0 * 8192)


@pytest.mark.parametrize(
    "text",
    [
        " validation loss at iteration 200 | lm loss value: 4.300000E+00 | lm loss PPL: 73.7 |",
        "saving checkpoint at iteration     200 to /ckpt",
        " loading checkpoint from /ckpt at iteration 20",
        "[Rank 7] (after 1 iterations) memory (MB) | allocated: 1000.0 | max allocated: 2000.0",
        "time (ms) | forward-compute: 400.00 | backward-compute: 500.00",
        "srun: error: nid001234: task 3: Bus error",
        "",
    ],
)
def test_other_lines_are_not_samples(text: str) -> None:
    assert parse_line(text) is None


def test_a_loss_without_lm_loss_and_fork_fields() -> None:
    # A fork that logs its own rates and names its loss otherwise.
    sample = parse_line(
        " iteration        5/      10 | samples per second: 12.5 | TFLOPs: 99.5 |"
        " tokens per second: 51200.0 | my loss: 2.5 | loss scale: 4096.0 | lm loss: nan |"
    )
    assert sample is not None
    assert (sample.loss, sample.loss_name) == (2.5, "my loss")
    assert (sample.samples_per_s, sample.tflops_per_gpu, sample.tokens_per_s) == (
        12.5,
        99.5,
        51200.0,
    )
    assert sample.consumed_tokens is None  # no sequence length known


def test_sequence_length_only_from_its_own_argument_line() -> None:
    assert seq_length("  seq_length ...................................... 4096") == 4096
    assert seq_length("0:   seq_length ...................................... 8192") == 8192
    assert seq_length("  encoder_seq_length .............................. 4096") is None
    assert seq_length("  seq_length ...................................... None") is None
