"""Shared by the local-scheduler tests of the operating commands (refusal, retry, status,
logs): run `oellm` in-process with the local scheduler and read the JSON it prints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from oellm.cli import main


class Cli:
    """`oellm` in-process in a tmp folder, as the user would type it."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str, local: bool = True) -> tuple[int, str, str]:
        argv = list(args)
        if local and argv[0] in {"reconcile", "status", "cancel", "retry", "logs"}:
            argv += ["--scheduler", "local"]
        code = main(argv)
        out, err = self.capsys.readouterr()
        return code, out, err

    def rows(self, bundle: str) -> dict[str, dict[str, Any]]:
        code, out, err = self("status", bundle, "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["schema_version"] == 1
        return {row["job"]: row for row in data["bundles"][0]["jobs"]}

    def ledger(self, bundle: str, job: str) -> list[dict[str, Any]]:
        code, out, err = self("status", bundle, job, "--json")
        assert code == 0, err
        attempts: list[dict[str, Any]] = json.loads(out)["attempts"]
        return attempts

    def until(self, bundle: str, done: set[str], deadline: float = 30) -> dict[str, Any]:
        """Reconcile until every job is in one of the `done` states and a round is quiet
        (the ends are recorded and nothing restarts)."""
        end = time.monotonic() + deadline
        while True:
            code, out, err = self("reconcile", bundle)
            assert code in (0, 1), out + err
            rows = self.rows(bundle)
            if code == 0 and all(row["state"] in done for row in rows.values()):
                # The rows are read after the round: a job that ended in between is not
                # recorded yet, nor its restart decided. Done once the next round is quiet too.
                code, out, err = self("reconcile", bundle)
                assert code in (0, 1), out + err
                if code == 0:
                    return rows
            assert time.monotonic() < end, rows
            time.sleep(0.3)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return Cli(capsys)
