"""Metrics files beside the attempt records: filled from what a log gained each round,
bounded however long the run, read back deduplicated; and end to end, a Megatron job's
progress in `oellm status` after `oellm reconcile` on the local scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oellm.cli import main
from oellm.reconciler import metrics_store
from oellm.reconciler.metrics_store import (
    latest_metrics,
    read_series,
    series_path,
    update_attempt,
)
from oellm.reconciler.records import Records
from tests.helpers import write

LOGS = Path(__file__).parent / "megatron_logs"
FAKE_MEGATRON = Path(__file__).parent / "fake_megatron"


def line(iteration: int, total: int = 10, loss: float = 5.0) -> str:
    return (
        f" [2024-09-06 08:00:00] iteration {iteration:8d}/{total:8d} | consumed samples: "
        f"{iteration * 8:12d} | elapsed time per iteration (ms): 100.0 | throughput per GPU "
        f"(TFLOP/s/GPU): 150.0 | learning rate: 1.000000E-04 | global batch size:     8 | "
        f"lm loss: {loss:.6E} | loss scale: 1.0 | number of skipped iterations:   0 | "
        "number of nan iterations:   1 |\n"
    )


def test_rounds_read_only_what_the_log_gained(tmp_path: Path) -> None:
    records = Records(tmp_path / "state")
    log = tmp_path / "job.log"
    log.write_text("  seq_length ...................................... 16\n" + line(1) + "it")
    first = update_attempt(records, "j", 1, [(log, 0)])
    assert first is not None and (first.iteration, first.seq_length) == (1, 16)
    # The partial line is read once it is whole; nothing is counted twice.
    log.write_text(log.read_text()[:-2] + line(2) + line(3, loss=4.0))
    assert update_attempt(records, "j", 1, [(log, 0)]) is not None
    assert update_attempt(records, "j", 1, [(log, 0)]) is not None
    latest = latest_metrics(records, "j", 1)
    assert latest is not None
    assert (latest.iteration, latest.loss, latest.nan_iterations) == (3, 4.0, 3)
    assert latest.summary() == "it 3/10 loss 4.000 150.0 TFLOP/s"
    assert latest.consumed_tokens == 3 * 8 * 16
    assert [p["iteration"] for p in read_series(records, "j", 1)] == [1, 2, 3]
    assert latest_metrics(records, "j", 2) is None


def test_a_restart_in_the_log_replaces_the_iterations_it_repeats(tmp_path: Path) -> None:
    records = Records(tmp_path / "state")
    log = tmp_path / "job.log"
    log.write_bytes((LOGS / "megatron-2024.log").read_bytes())
    found = update_attempt(records, "j", 1, [(log, 0)])
    assert found is not None and (found.iteration, found.restarts) == (40, 1)
    series = read_series(records, "j", 1)
    assert [(p["iteration"], p["loss"]) for p in series] == [
        (10, 10.5),
        (20, 9.1),
        (30, 7.9),  # the resumed run's iteration 30, not the lost one
        (40, 7.2),
    ]


def test_a_long_run_keeps_a_bounded_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_store, "MAX_POINTS", 50)
    records = Records(tmp_path / "state")
    log = tmp_path / "job.log"
    total = 5000
    # One long catch-up round, then rounds that each find a few hundred new lines.
    log.write_text("".join(line(it, total, 10.0 - it / 1000) for it in range(1, 3001)))
    update_attempt(records, "j", 1, [(log, 0)])
    assert len(series_path(records, "j", 1).read_text().splitlines()) <= 50
    for start in range(3001, total + 1, 250):
        with open(log, "a") as handle:
            for it in range(start, start + 250):
                handle.write(line(it, total, loss=10.0 - it / 1000))
        update_attempt(records, "j", 1, [(log, 0)])
        assert len(series_path(records, "j", 1).read_text().splitlines()) <= 50
    latest = latest_metrics(records, "j", 1)
    assert latest is not None and latest.iteration == total
    series = read_series(records, "j", 1)
    lines = series_path(records, "j", 1).read_text().splitlines()
    assert len(lines) <= 50 and len(series) >= 20
    its = [p["iteration"] for p in series]
    assert its[0] == 1 and its[-1] == total and its == sorted(its)
    # Spread over the whole run, not only its start.
    assert its[len(its) // 2] > total // 4


def test_an_unreadable_metrics_file_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    records = Records(tmp_path / "state")
    log = tmp_path / "job.log"
    log.write_text(line(1) + line(2))
    update_attempt(records, "j", 1, [(log, 0)])
    metrics_store.metrics_path(records, "j", 1).write_text("{not json")
    assert latest_metrics(records, "j", 1) is None
    again = update_attempt(records, "j", 1, [(log, 0)])
    assert again is not None and again.iteration == 2
    assert [p["iteration"] for p in read_series(records, "j", 1)] == [1, 2]


def test_a_moved_job_keeps_its_metrics(tmp_path: Path) -> None:
    records = Records(tmp_path / "state")
    log = tmp_path / "job.log"
    log.write_text(line(1))
    update_attempt(records, "old", 1, [(log, 0)])
    assert records.move("old", "new")
    moved = latest_metrics(records, "new", 1)
    assert moved is not None and moved.job == "new"
    assert [p["iteration"] for p in read_series(records, "new", 1)] == [1]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


SWEEP = """
defaults:
  - /backend: megatron
project: {name: lrs}
job: {name: "lrs_${backend.megatron.lr}"}
backend:
  megatron:
    seq_length: 64
    global_batch_size: 8
    train_iters: 12
    lr: 1.0e-4
sweep:
  grids:
    - backend.megatron.lr: [1.0e-4, 1.0e-3]
"""


def compile_sweep(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(path / "exp.yaml", SWEEP)
    code, out, err = run(["compile", str(path / "exp.yaml"), "-o", str(path / "b")], capsys)
    assert code == 0, out + err


def test_status_shows_megatron_progress_after_a_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEGATRON_LM_DIR", str(FAKE_MEGATRON))
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    compile_sweep(tmp_path, capsys)
    lock = json.loads((tmp_path / "b" / "plan.lock.json").read_text())
    assert {j["backend"] for j in lock["jobs"]} == {"megatron"}
    code, out, err = run(
        ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"], capsys
    )
    assert code == 0, out + err
    code, out, _ = run(["status", "b", "--scheduler", "local"], capsys)
    assert code == 0
    header, *rows, summary = out.splitlines()
    assert "PROGRESS" in header and summary == "2 jobs: 2 COMPLETED"
    assert len(rows) == 2 and all("it 12/12 loss " in r and "TFLOP/s" in r for r in rows)
    code, out, _ = run(["status", "b", "--json", "--scheduler", "local"], capsys)
    by_job = {row["job"]: row["metrics"] for row in json.loads(out)["bundles"][0]["jobs"]}
    assert by_job["lrs_0.001"]["loss"] < by_job["lrs_0.0001"]["loss"]
    assert by_job["lrs_0.001"]["iteration"] == 12
    code, out, _ = run(["status", "b", "lrs_0.001", "--scheduler", "local"], capsys)
    assert "LAST LOGGED" in out and "it 12/12 loss" in out
