"""`oellm logs` on the local scheduler: a job's log, a chosen attempt's, a chain's links in
order, no log yet (exit 2), and `-f` following a log across a chain's links and into the
next attempt, stopping by itself once the end is recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import write
from tests.reconciler.local_cli import Cli, cli

__all__ = ["cli"]

RESTARTED = """
project: {name: lg}
job:
  name: lg
  restart: {on: [FAILED], backoff_seconds: 0}
backend:
  bash:
    command: |
      if [ -f "${job.base_output_dir}/flag" ]; then echo second run; sleep 1; echo bye
      else touch "${job.base_output_dir}/flag"; echo first run; sleep 1; exit 1; fi
"""


def _follow(bundle: str, job: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "oellm", "logs", bundle, job, "-f", "--scheduler", "local"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_logs_of_attempts_and_no_log_yet(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path / "e.yaml", RESTARTED)
    assert cli("compile", "e.yaml", "-o", "b")[0] == 0
    code, _, err = cli("logs", "b", "lg")
    assert code == 2 and "lg has no log yet" in err and "hint:" in err
    code, _, err = cli("logs", "b", "nope")
    assert code == 2 and "no job named nope" in err
    cli.until("b", {"COMPLETED"})
    code, out, _ = cli("logs", "b", "lg")
    assert code == 0 and "second run\nbye\n" in out and "first run" not in out
    code, out, _ = cli("logs", "b", "lg", "--attempt", "1")
    assert code == 0 and "first run" in out and "second run" not in out
    code, _, err = cli("logs", "b", "lg", "--attempt", "3")
    assert code == 2 and "lg has no attempt 3" in err and "its attempts: 1, 2" in err


def test_follow_goes_on_into_the_next_attempt_and_stops_by_itself(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path / "e.yaml", RESTARTED)
    assert cli("compile", "e.yaml", "-o", "b")[0] == 0
    assert cli("reconcile", "b")[0] == 1
    proc = _follow("b", "lg", tmp_path)
    try:
        cli.until("b", {"COMPLETED"})
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.index("first run") < out.index("second run") < out.index("bye")


def test_follow_a_chain_link_after_link(cli: Cli, tmp_path: Path) -> None:
    write(
        tmp_path / "c.yaml",
        """
        project: {name: ch}
        job: {name: ch, chain_repeat: 2}
        backend: {bash: {command: "for i in 1 2; do echo tick $i $SLURM_JOB_ID; sleep 0.5; done"}}
        """,
    )
    assert cli("compile", "c.yaml", "-o", "b")[0] == 0
    assert cli("reconcile", "b")[0] == 1
    proc = _follow("b", "ch", tmp_path)
    try:
        end = time.monotonic() + 40
        while proc.poll() is None and time.monotonic() < end:
            cli("reconcile", "b")
            time.sleep(0.5)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("==> ch attempt 1 link 1: job 1 (")
    assert lines[1:3] == ["tick 1 1", "tick 2 1"]
    assert lines[3].startswith("==> ch attempt 1 link 2: job 2 (")
    assert lines[4:] == ["tick 1 2", "tick 2 2"]
    _, out, _ = cli("logs", "b", "ch")
    assert out.splitlines() == lines
