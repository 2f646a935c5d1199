"""`oellm retry` on the real SLURM: a failed job and a cancelled one get one new attempt
each, submitted exactly once by the next round (one SLURM job per attempt tag), even when
two rounds run at once."""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reconciler.slurm_helpers import cancel_prefix, compile_to, ledger, oellm, tag_prefix
from tests.reconciler.slurm_helpers import status_rows as status
from tests.reconciler.test_reconcile_slurm import reconcile_until_done, sacct_names

pytestmark = pytest.mark.slurm

EXP = """
project: {name: retry_slurm}
job: {name: "rs_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "sleep ${vars.i}; exit 3"}}
sweep: {params: {vars.i: [1, 300]}}
"""


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> Iterator[None]:
    yield


def test_failed_and_cancelled_jobs_are_retried_exactly_once(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, EXP)
    prefix = tag_prefix(bundle)
    try:
        assert oellm("reconcile", str(bundle)).returncode == 1
        assert oellm("cancel", str(bundle), "rs_300").returncode == 1
        reconcile_until_done(bundle)
        rows = status(bundle)
        assert (rows["rs_1"]["state"], rows["rs_300"]["state"]) == ("FAILED", "CANCELLED")
        asked = oellm("retry", str(bundle))
        assert asked.returncode == 1, asked.stdout + asked.stderr
        assert "retry recorded for rs_1" in asked.stdout
        assert "retry recorded for rs_300" in asked.stdout
        # Two rounds at once: each attempt is submitted by one of them only.
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "oellm", "reconcile", str(bundle)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        joined = "".join(outs)
        assert joined.count("submitted rs_1 attempt 2") == 1, outs
        assert joined.count("submitted rs_300 attempt 2") == 1, outs
        assert oellm("cancel", str(bundle), "rs_300").returncode == 1
        reconcile_until_done(bundle)
        assert [a["cause"].split(" (")[0] for a in ledger(bundle, "rs_1")] == [
            "first submission",
            "retried by the user",
        ]
        names = sacct_names(prefix, expect=4)
        per_attempt = collections.Counter(names)
        assert sorted(per_attempt.values()) == [1, 1, 1, 1], names
    finally:
        cancel_prefix(prefix)
