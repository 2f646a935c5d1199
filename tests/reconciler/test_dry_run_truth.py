"""`reconcile --dry-run` shows the decisions the real round then makes, on the same state:
fresh jobs, renamed ones (`--moved`: the dry run moves their records in memory only),
records lost and recovered from the scheduler, and cancelled jobs."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write
from tests.reconciler.local_cli import Cli, cli

__all__ = ["cli"]

EXP = """
project: {name: dt}
job: {name: "%s_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "sleep 60"}}
sweep: {params: {vars.i: [1, 2]}}
"""


def _decisions(cli: Cli, *args: str) -> tuple[list[tuple[Any, ...]], list[str]]:
    code, out, err = cli("reconcile", "b", "--json", *args)
    assert code in (0, 1), err
    data = json.loads(out)
    assert data["schema_version"] == 1 and data["dry_run"] == ("--dry-run" in args)
    main = [
        (a["kind"], a["job"], a["attempt"], a["job_id"], a["reason"])
        for a in data["actions"]
        if a["kind"] not in ("event", "state", "link")
    ]
    return main, data["lines"]


def _compare(cli: Cli) -> list[tuple[Any, ...]]:
    dry, dry_lines = _decisions(cli, "--dry-run")
    real, real_lines = _decisions(cli)
    assert dry == real
    would = [line.removeprefix("would move ") for line in dry_lines if line.startswith("would mo")]
    assert would == [line.removeprefix("moved ") for line in real_lines if line.startswith("mo")]
    return real


def _until_ended(cli: Cli, job: str, timeout: float = 30.0) -> None:
    """Until the local scheduler sees the cancelled job's process gone: before that, a dry run
    would still cancel it and the round after it find it ended, on two different states."""
    deadline = time.monotonic() + timeout
    while True:
        dry, _ = _decisions(cli, "--dry-run")
        if any(kind == "finish" and name == job for kind, name, *_ in dry):
            return
        assert time.monotonic() < deadline, f"{job} still runs after its cancel: {dry}"
        time.sleep(0.1)


@pytest.mark.parametrize("situation", ["fresh", "moved", "recovered", "cancelled"])
def test_the_dry_run_shows_what_the_round_does(cli: Cli, tmp_path: Path, situation: str) -> None:
    write(tmp_path / "e.yaml", EXP % "old")
    assert cli("compile", "e.yaml", "-o", "b")[0] == 0
    try:
        if situation != "fresh":
            assert cli("reconcile", "b")[0] == 1
        if situation == "moved":
            write(tmp_path / "e.yaml", EXP % "new")
            code, _, err = cli("compile", "e.yaml", "-o", "b", "--moved", "old_1=new_1")
            assert code == 0, err
        elif situation == "recovered":
            shutil.rmtree(tmp_path / "out" / ".oellm" / "dt" / "jobs" / "old_1")
        elif situation == "cancelled":
            assert cli("cancel", "b", "old_2")[0] == 1
            _until_ended(cli, "old_2")
        real = _compare(cli)
        kinds = {job: kind for kind, job, *_ in real}
        expected = {
            "fresh": {"old_1": "submit", "old_2": "submit"},
            "moved": {"new_1": "wait", "new_2": "submit"},
            "recovered": {"old_1": "recover", "old_2": "wait"},
            "cancelled": {"old_1": "wait", "old_2": "finish"},
        }[situation]
        assert {job: kinds[job] for job in expected} == expected, real
    finally:
        cli("cancel", "b")
