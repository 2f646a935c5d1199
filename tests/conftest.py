"""Root conftest. The SLURM part: `slurm_cluster` skips a test when the real local cluster
(tests/slurm/cluster.sh) is not usable, and with CI=true a skipped `slurm` test fails the run,
so CI can never go green without having talked to a real SLURM (HOUSE_STYLE 12). The same
holds for the `strace` tests, which read the system calls of a command.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import TextFile

START_HINT = "start it (as root) with: bash tests/slurm/cluster.sh up"
# sinfo long states in which the node accepts jobs; a suffix (*, ~, #, !, %) means it does not.
USABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
# sinfo and sacct retry for several seconds when a daemon is down; bound them.
PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class SlurmCluster:
    """What the tests may rely on about the running local cluster."""

    node: str
    partitions: tuple[str, ...]
    default_partition: str


def _probe(argv: list[str]) -> tuple[int, str]:
    """Return (exit status, stdout + stderr); 127 when the command is not installed."""
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {PROBE_TIMEOUT_S:.0f}s"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def probe_slurm_cluster() -> SlurmCluster | str:
    """The usable cluster, or the reason it is not usable."""
    rc, out = _probe(["sinfo", "--noheader", "--Node", "--format=%N|%P|%T"])
    if rc != 0:
        return f"sinfo failed (exit {rc}): {out}"
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    if not rows or any(len(row) != 3 for row in rows):
        return f"sinfo shows no node: {out!r}"
    node, _, state = rows[0]
    if state not in USABLE_NODE_STATES:
        return f"node {node} is {state!r}, not idle"
    partitions = tuple(part.rstrip("*") for _, part, _ in rows)
    defaults = [part.rstrip("*") for _, part, _ in rows if part.endswith("*")]
    rc, out = _probe(["sacct", "--noheader", "-X", "--starttime=now-1minutes", "--format=JobID"])
    if rc != 0:
        return f"sacct failed (exit {rc}): {out}"
    return SlurmCluster(
        node=node, partitions=partitions, default_partition=defaults[0] if defaults else ""
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The real local SLURM; skips (a failure under CI=true) when it is not usable.

    Under CI it waits a while for a controller that is restarting (another test may have just
    stopped it on purpose) before it calls the cluster unusable."""
    found = probe_slurm_cluster()
    deadline = time.monotonic() + (90 if _in_ci() else 0)
    while isinstance(found, str) and time.monotonic() < deadline:
        time.sleep(3)
        found = probe_slurm_cluster()
    if isinstance(found, str):
        pytest.skip(f"local SLURM cluster not usable ({found}); {START_HINT}")
    return found


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _needs(item: pytest.Item) -> str | None:
    """The marker of a test that CI must run, never skip: `slurm` or `strace`."""
    return next((m for m in ("slurm", "strace") if item.get_closest_marker(m) is not None), None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and _in_ci()
        and (marker := _needs(item)) is not None
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skipped {marker} test fails the run. {reason}".replace(
            "Skipped: ", "", 1
        )
    return report


@pytest.fixture
def text_snapshot(snapshot: Any) -> Any:
    """A syrupy snapshot stored as one plain-text file (`TextFile`)."""
    return snapshot.use_extension(TextFile)
