"""The state lock against the real local SLURM: 8 `oellm reconcile` processes released at the
same instant onto one bundle of 20 held jobs, with a stale lock of a dead process, an abandoned
empty lock file, or a stalled lock write in every process. Each job must be queued exactly once.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.lock import STALL_ENV
from oellm.reconciler.lock_file import STATE_LOCK_NAME
from tests.reconciler.slurm_helpers import (
    cancel_prefix,
    compile_to,
    oellm,
    queued_names,
    tag_prefix,
)

pytestmark = pytest.mark.slurm

ROUNDS = 8
JOBS = 20
# Each process imports oellm first, then sleeps until the shared start time, so the rounds
# reach the lock together rather than staggered by interpreter start-up.
STARTER = """
import sys, time
import oellm.reconciler.reconcile
from oellm.cli import main
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> Iterator[None]:
    yield


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("case", ["dead pid", "empty lock", "stalled write"])
def test_rounds_started_together_queue_each_job_once(tmp_path: Path, case: str) -> None:
    name = "lk_" + case.replace(" ", "_")
    sweep = ", ".join(str(i) for i in range(JOBS))
    bundle = compile_to(
        tmp_path,
        f"""
        project: {{name: {name}}}
        job: {{name: "{name}_${{vars.i}}"}}
        vars: {{i: 0}}
        backend: {{bash: {{command: "sleep 600"}}}}
        slurm: {{sbatch: {{hold: true}}}}
        sweep:
          params: {{vars.i: [{sweep}]}}
        """,
    )
    state = load_bundle(bundle).state_path
    state.mkdir(parents=True, exist_ok=True)
    lock = state / STATE_LOCK_NAME
    env = {**os.environ, "OELLM_INTENT_GRACE_SECONDS": "3"}
    if case == "dead pid":
        expires = time.time() + 600
        holder = {"host": socket.gethostname(), "pid": dead_pid(), "token": "x", "expires": expires}
        lock.write_text(json.dumps(holder))
    elif case == "empty lock":
        lock.write_text("")
        then = time.time() - 120  # left by a round that died long ago
        os.utime(lock, (then, then))
    else:
        env[STALL_ENV] = "1"
    prefix = tag_prefix(bundle)
    start = time.time() + 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(start), "reconcile", str(bundle)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(ROUNDS)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert set(codes) <= {0, 1} and 1 in codes, outputs
        again = oellm("reconcile", str(bundle))
        assert again.returncode == 0 and "submitted" not in again.stdout, again.stdout
        queued = collections.Counter(n.rsplit(".", 1)[0] for n in queued_names(prefix))
        assert len(queued) == JOBS and set(queued.values()) == {1}, queued
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cancel_prefix(prefix)
