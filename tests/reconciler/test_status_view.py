"""`oellm status` for sweeps on the local scheduler: the summary by state, filters by state,
stage and glob, start time and run time from the markers, the log and a failed job's last
lines, a `finish` event shown as COMPLETED, several bundles, colors, and `--watch`."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from oellm.reconciler.session import Session
from oellm.reconciler.status_view import build, summary
from oellm.status_cli import color_enabled, render
from tests.helpers import write
from tests.reconciler.local_cli import Cli, cli

__all__ = ["cli"]

SWEEP = """
project: {name: sv}
job:
  name: "sv_${vars.mode}_${stage}"
  log_events:
    - {name: done, kind: substring, pattern: "FINISHED-HERE", actions: [{kind: finish}]}
vars: {mode: ok}
backend:
  bash:
    command: |
      case ${vars.mode} in
        ok) echo fine ;;
        bad) for i in 1 2 3 4 5; do echo "line $i"; done; exit 2 ;;
        event) echo FINISHED-HERE; sleep 2; exit 4 ;;
        long) sleep 60 ;;
      esac
sweep:
  type: list
  groups:
    - params: {vars.mode: [ok, bad, event]}
      defaults: {stage: one}
    - params: {vars.mode: [long]}
      defaults: {stage: two}
"""


def _ready(cli: Cli) -> dict[str, dict[str, object]]:
    end = time.monotonic() + 30
    while True:
        cli("reconcile", "b")
        rows = cli.rows("b")
        states = {job: row["state"] for job, row in rows.items()}
        done = {"sv_ok_one", "sv_bad_one", "sv_event_one"}
        if (
            states["sv_long_two"] == "RUNNING"
            and all(states[j] in ("COMPLETED", "FAILED") for j in done)
            and cli("reconcile", "b")[0] == 0
        ):
            return rows
        assert time.monotonic() < end, states
        time.sleep(0.3)


def test_a_sweep_at_a_glance(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path / "exp.yaml", SWEEP)
    assert cli("compile", "exp.yaml", "-o", "b")[0] == 0
    try:
        rows = _ready(cli)
        assert rows["sv_bad_one"]["state"] == "FAILED"
        assert rows["sv_bad_one"]["tail"] == ["line 3", "line 4", "line 5"]
        # A finish event counts as completed, whatever the exit code.
        event = rows["sv_event_one"]
        assert (event["state"], event["finished_by_event"]) == ("COMPLETED", True)
        assert event["scheduler_state"] == "FAILED"
        assert event["reason"].startswith("finished by event: done: FINISHED-HERE")
        assert event["reason"].endswith(", exit 4")
        # Started = when the script started running (its marker), not when it was submitted.
        long_row = rows["sv_long_two"]
        marker = tmp_path / "out" / "sv_long_two" / ".oellm" / f"{long_row['job_id']}.started"
        assert long_row["started"].startswith(marker.read_text().strip().removesuffix("Z"))
        assert isinstance(long_row["run_seconds"], int) and long_row["run_seconds"] >= 0
        assert long_row["log"] == "out/sv_long_two/current.log"
        assert rows["sv_ok_one"]["tail"] == []

        code, out, _ = cli("status", "b")
        lines = out.splitlines()
        assert code == 0
        assert lines[-1] == "4 jobs: 2 COMPLETED, 1 RUNNING, 1 FAILED"
        bad = next(i for i, line in enumerate(lines) if line.startswith("sv_bad_one "))
        assert lines[bad + 1 : bad + 4] == ["    | line 3", "    | line 4", "    | line 5"]
        assert "\x1b[" not in out  # not a terminal: no colors

        code, out, _ = cli("status", "b", "--state", "failed", "--tail", "1")
        assert out.splitlines()[1:] == [out.splitlines()[1], "    | line 5", "1 job: 1 FAILED"]
        assert out.splitlines()[1].startswith("sv_bad_one ")
        out = cli("status", "b", "--stage", "two")[1]
        assert out.splitlines()[-1] == "1 job: 1 RUNNING"
        out = cli("status", "b", "sv_*_one", "--state", "COMPLETED")[1]
        assert out.splitlines()[-1] == "2 jobs: 2 COMPLETED"
        # One exact name: the attempt ledger, as before.
        out = cli("status", "b", "sv_bad_one")[1]
        assert out.splitlines()[0].split()[:3] == ["ATTEMPT", "ID", "STATE"]
        code, _, err = cli("status", "b", "nope_*")
        assert code == 2 and "no job named nope_*" in err
    finally:
        cli("cancel", "b")


def test_several_bundles_one_section_each_and_a_total(cli: Cli, tmp_path: Path) -> None:
    for name in ("p", "q"):
        write(
            tmp_path / f"{name}.yaml",
            f"project: {{name: {name}}}\nbackend: {{bash: {{command: 'echo {name}'}}}}\n",
        )
        assert cli("compile", f"{name}.yaml", "-o", name)[0] == 0
    cli.until("p", {"COMPLETED"})
    code, out, _ = cli("status", "p", "q")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "== p (p)" and "== q (q)" in lines
    assert lines[-1] == "total: 2 jobs: 1 COMPLETED, 1 NOT_SUBMITTED"
    data = __import__("json").loads(cli("status", "p", "q", "--json")[1])
    assert [b["bundle"] for b in data["bundles"]] == ["p", "q"]
    assert data["total"] == {"jobs": 2, "states": {"COMPLETED": 1, "NOT_SUBMITTED": 1}}


def test_colors_only_on_a_terminal_without_no_color(cli: Cli, tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert color_enabled(Tty(), {}) is True
    assert color_enabled(Tty(), {"NO_COLOR": "1"}) is False
    assert color_enabled(Tty(), {"NO_COLOR": ""}) is True  # only a non-empty value disables
    assert color_enabled(io.StringIO(), {}) is False
    write(tmp_path / "c.yaml", "project: {name: c}\nbackend: {bash: {command: 'exit 1'}}\n")
    assert cli("compile", "c.yaml", "-o", "c")[0] == 0
    cli.until("c", {"FAILED"})
    lines: list[str] = []
    render([build(Session(Path("c"), "local"))], lines.append, color=True)
    assert "\x1b[31m\x1b[1mFAILED" in lines[1]
    assert summary(__import__("collections").Counter()) == "0 jobs"


def test_watch_redraws_until_interrupted(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path / "w.yaml", "project: {name: w}\nbackend: {bash: {command: 'true'}}\n")
    assert cli("compile", "w.yaml", "-o", "w")[0] == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "oellm", "status", "w", "--watch", "0.5", "--scheduler", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.count("every 0.5 s, ") >= 2
    assert out.count("1 job: 1 NOT_SUBMITTED") >= 2
    assert "\x1b[2J" not in out and "Traceback" not in err  # not a terminal: no clearing
