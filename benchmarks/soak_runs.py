"""Running oellm for the soak as cron would: each command a separate process in the work dir
(several at once from a barrier), killed on purpose or when it hangs, its exit status judged
(3, or a traceback, is a bug) and written to the soak's log, one JSON line per process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from soak_report import Tally  # a sibling module: benchmarks/ is not a package

# A round may take this long before it counts as hung (it is then killed).
ROUND_TIMEOUT_S = 240.0
# Runs on the far side of the barrier: imports oellm first, so that every round starts its
# work within a few milliseconds of the others once the start file appears.
BARRIER = """
import os, sys, time
from oellm.cli import main
import oellm.reconciler.reconcile
ready, start = sys.argv[1], sys.argv[2]
open(ready, "w").close()
end = time.monotonic() + 120
while not os.path.exists(start) and time.monotonic() < end:
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    what: str
    round: int
    extra: dict[str, str]
    started: float
    killed: bool = False


class Runs:
    """The oellm processes of one soak: started with its environment, counted in its tally."""

    def __init__(self, work: Path, env: dict[str, str], tally: Tally) -> None:
        self.work = work
        self.env = env
        self.tally = tally
        self.log: TextIO = (work / "soak.log.jsonl").open("a", encoding="utf-8")

    def argv(self, *args: str) -> list[str]:
        """The command line of `oellm <args>`, run by this Python."""
        return [sys.executable, "-m", "oellm", *args]

    def spawn(self, argv: list[str], what: str, number: int, extra: dict[str, str]) -> Proc:
        popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **extra},
            cwd=self.work,
        )
        return Proc(popen, what, number, extra, time.monotonic())

    def kill(self, proc: Proc) -> None:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGKILL)
            proc.killed = True
            self.tally.kills += 1

    def finish(self, proc: Proc, expect_kill: bool = False) -> tuple[int, str, str]:
        """Wait for `proc`, and judge its exit status."""
        timeout = max(1.0, ROUND_TIMEOUT_S - (time.monotonic() - proc.started))
        hung = False
        try:
            out, err = proc.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            hung = True
            proc.popen.kill()
            out, err = proc.popen.communicate()
        code = proc.popen.returncode
        self.tally.oellm_runs += 1
        self.tally.exit_codes[f"{proc.what.split()[0]} {code}"] += 1
        entry = {
            "round": proc.round,
            "what": proc.what,
            "env": proc.extra,
            "exit": code,
            "killed": proc.killed,
            "seconds": round(time.monotonic() - proc.started, 2),
            "stdout": out[-4000:],
            "stderr": err[-4000:],
        }
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()
        command = proc.what.split()[0]
        fine = {"reconcile": (0, 1, 75), "compile": (0,), "status": (0,)}[command]
        if hung:
            self.tally.hung.append(entry)
        elif code == 3 or "Traceback" in err:
            self.tally.exit3.append(entry)
        elif code == -signal.SIGKILL and (proc.killed or expect_kill):
            pass  # killed on purpose
        elif code not in fine:
            self.tally.unexpected.append(entry)
        return code, out, err

    def run(self, argv: list[str], what: str, number: int, **extra: str) -> tuple[int, str, str]:
        return self.finish(self.spawn(argv, what, number, extra))

    def start_together(
        self, count: int, args: list[str], what: str, number: int, extra: dict[str, str]
    ) -> tuple[list[Proc], list[Path]]:
        """`count` processes of `oellm <args>` behind a barrier, released at once when each is
        ready (or one has ended, or a minute has passed); and the flag files to delete once
        they have all finished."""
        start = self.work / f"start.{number}"
        ready = [self.work / f"ready.{number}.{i}" for i in range(count)]
        procs = [
            self.spawn(
                [sys.executable, "-c", BARRIER, str(flag), str(start), *args], what, number, extra
            )
            for flag in ready
        ]
        end = time.monotonic() + 60
        while not all(flag.exists() for flag in ready) and time.monotonic() < end:
            if any(p.popen.poll() is not None for p in procs):
                break
            time.sleep(0.01)
        start.touch()
        return procs, [*ready, start]
