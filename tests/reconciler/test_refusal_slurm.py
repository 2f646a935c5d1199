"""On the real SLURM: a script asking for a partition that does not exist is refused by
sbatch for good (issue 13). The attempt ends as SUBMIT_FAILED with sbatch's words, no job
exists, and later rounds submit nothing until the script changes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reconciler.slurm_helpers import (
    cancel_prefix,
    compile_to,
    ledger,
    oellm,
    queued_names,
    tag_prefix,
)
from tests.reconciler.slurm_helpers import status_rows as status
from tests.reconciler.test_reconcile_slurm import reconcile_until_done

pytestmark = pytest.mark.slurm

EXP = """
project: {name: nopart}
backend: {bash: {command: "echo hi"}}
slurm: {sbatch: {partition: %s}}
"""


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> Iterator[None]:
    yield


def test_an_invalid_partition_is_refused_once_not_resubmitted(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, EXP % "nosuchpart")
    prefix = tag_prefix(bundle)
    try:
        first = oellm("reconcile", str(bundle))
        assert first.returncode == 1, first.stdout + first.stderr
        assert "Invalid partition name specified" in first.stderr
        (attempt,) = ledger(bundle, "nopart")
        assert attempt["final_state"] == "SUBMIT_FAILED"
        assert "invalid partition specified: nosuchpart" in attempt["reason"]
        row = status(bundle)["nopart"]
        assert row["state"] == "SUBMIT_FAILED"
        assert "Invalid partition name specified" in row["reason"]
        # Past the intent grace (3 s here), a round still submits nothing.
        time.sleep(4)
        for _ in range(2):
            quiet = oellm("reconcile", str(bundle))
            assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
        assert len(ledger(bundle, "nopart")) == 1
        assert queued_names(prefix) == []
        # The fixed script is submitted as attempt 2 and runs.
        compile_to(tmp_path, EXP % "debug")
        reconcile_until_done(bundle)
        assert status(bundle)["nopart"]["state"] == "COMPLETED"
        assert [a["final_state"] for a in ledger(bundle, "nopart")] == [
            "SUBMIT_FAILED",
            "COMPLETED",
        ]
    finally:
        cancel_prefix(prefix)
