"""Never twice, never lost, under abuse: `benchmarks/soak.py --short` on the real local SLURM
(rounds killed at random instants and at crash points, started together over stale locks,
records and the state dir deleted, recompiles, an output-dir move), counted from sacct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slurm

# The short soak takes a few minutes on two cores; a hung round is killed by the soak itself.
TIMEOUT_S = 900
ZERO = ("duplicates", "live_at_once", "lost", "exit3", "hung", "move_failures")


def test_short_soak_submits_nothing_twice_and_loses_nothing(
    tmp_path: Path, slurm_cluster: object
) -> None:
    summary_path = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--short", "--seed", "1"]
        + ["--workdir", str(tmp_path / "work"), "--json", str(summary_path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    report = run.stdout[-8000:] + run.stderr[-4000:]
    assert summary_path.exists(), report
    summary = json.loads(summary_path.read_text())
    line = next(x for x in run.stdout.splitlines() if x.startswith("SOAK-RESULT "))
    assert json.loads(line.removeprefix("SOAK-RESULT "))["ok"] == summary["ok"]
    assert {key: summary[key] for key in ZERO} == dict.fromkeys(ZERO, 0), report
    assert run.returncode == 0, report
    # The abuse happened: rounds were killed, raced and moved, and every job ran.
    assert summary["rounds"] == 28 and summary["jobs"] == 18, report
    assert summary["kills"] + summary["crash_points_reached"] > 0, report
    assert summary["concurrent_rounds"] > 0 and summary["moves"] == 1, report
    assert summary["slurm_jobs"] >= summary["jobs"] - 2, report  # an array's tasks share one id
    assert summary["cancelled_at_end"] == 0, report
