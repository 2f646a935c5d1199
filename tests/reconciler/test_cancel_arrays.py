"""`oellm cancel` at the subprocess boundary: a whole array goes to scancel as its array job id,
part of one as its task ids, and many ids are split over command lines of bounded length."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oellm.reconciler import tags
from oellm.reconciler.arrays import whole_arrays
from oellm.reconciler.cancel import cancel_jobs
from oellm.reconciler.reconcile import reconcile_once
from oellm.reconciler.schedulers.slurm import SlurmScheduler, scancel_argvs
from oellm.reconciler.session import Session
from oellm.shell import Completed
from tests.reconciler.slurm_helpers import (
    cancel_prefix,
    compile_to,
    ledger,
    oellm,
    status_rows,
    tag_prefix,
)

ARRAY = """
project: {name: carr}
job: {name: "c_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "echo ${vars.i}"}}
slurm: {array: true, sbatch: {hold: true}}
sweep: {params: {vars.i: [0, 1, 2, 3]}}
"""


@dataclass
class FakeSlurm:
    """Stands in for shell.run: sbatch answers job id 500 and remembers the tag; squeue lists
    that array's pending tasks folded, as SLURM 22.05 does (tests/slurm/recorded)."""

    calls: list[list[str]] = field(default_factory=list)
    tag: str = ""
    spec: str = ""

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        self.calls.append(list(argv))
        if argv[0] == "sbatch":
            self.tag = next(a for a in argv if a.startswith("--job-name=")).split("=", 1)[1]
            self.spec = next(a for a in argv if a.startswith("--array=")).split("=", 1)[1]
            return Completed(tuple(argv), 0, "500\n", "")
        if argv[0] == "squeue" and self.tag:
            row = f"500_[{self.spec}]|{self.tag}|PENDING|JobHeldUser|{self.tag}\n"
            return Completed(tuple(argv), 0, row, "")
        return Completed(tuple(argv), 0, "", "")

    def scancels(self) -> list[list[str]]:
        return [argv for argv in self.calls if argv[0] == "scancel"]


@pytest.fixture
def submitted(tmp_path: Path) -> tuple[Session, FakeSlurm]:
    bundle = compile_to(tmp_path, ARRAY)
    session = Session(bundle, "slurm")
    fake = FakeSlurm()
    session.scheduler = SlurmScheduler(run=fake)
    report = reconcile_once(session, dry_run=False, say=lambda line: None)
    assert report.exit_code == 1 and fake.spec == "0-3"
    return session, fake


def test_cancelling_a_whole_array_names_the_array_once(
    submitted: tuple[Session, FakeSlurm],
) -> None:
    session, fake = submitted
    said: list[str] = []
    assert cancel_jobs(session, [], said.append).exit_code == 1
    assert fake.scancels() == [["scancel", "500"]]
    assert "cancel recorded for c_2 (job 500_2)" in said


def test_cancelling_part_of_an_array_names_its_tasks(
    submitted: tuple[Session, FakeSlurm],
) -> None:
    session, fake = submitted
    assert cancel_jobs(session, ["c_1", "c_3"], lambda line: None).exit_code == 1
    assert fake.scancels() == [["scancel", "500_1", "500_3"]]


def test_whole_arrays() -> None:
    live = ["7_0", "7_1", "8_0", "8_1", "9"]
    assert whole_arrays(["7_0", "7_1", "8_1", "9"], live) == ["7", "8_1", "9"]
    # An array task SLURM did not list (finished, or not asked) does not spare its array.
    assert whole_arrays(["7_0", "7_1", "7_0"], ["7_1"]) == ["7"]
    assert whole_arrays([], live) == []


def test_many_ids_are_split_over_bounded_command_lines() -> None:
    ids = [str(10_000_000 + i) for i in range(10_000)]
    argvs = scancel_argvs(ids, limit=4096)
    assert all(argv[0] == "scancel" for argv in argvs)
    assert all(sum(len(a) + 1 for a in argv[1:]) <= 4096 for argv in argvs)
    assert [i for argv in argvs for i in argv[1:]] == ids
    assert len(argvs) == 22  # 455 ids of 9 bytes a line
    assert scancel_argvs(["1", "2"]) == [["scancel", "1", "2"]]


def test_the_scheduler_runs_one_scancel_per_batch() -> None:
    fake = FakeSlurm()
    SlurmScheduler(run=fake).cancel([str(10_000_000 + i) for i in range(20_000)])
    assert len(fake.scancels()) == 3  # 180,000 bytes of ids in 64 KiB command lines


@pytest.mark.slurm
def test_cancelling_an_array_bundle_ends_every_task_on_slurm(
    tmp_path: Path, slurm_cluster: object
) -> None:
    bundle = compile_to(tmp_path, ARRAY.replace("[0, 1, 2, 3]", "[0, 1, 2, 3, 4, 5]"))
    prefix = tag_prefix(bundle)
    try:
        first = oellm("reconcile", str(bundle))
        assert first.returncode == 1 and "as task" in first.stdout, first.stdout + first.stderr
        assert len(live_tasks(prefix)) == 6
        with_shims = shims(tmp_path)
        done = oellm("cancel", str(bundle), env=with_shims)
        assert done.returncode == 1, done.stdout + done.stderr
        calls = (tmp_path / "calls.log").read_text().splitlines()
        scancels = [line for line in calls if line.startswith("scancel")]
        assert len(scancels) == 1 and "_" not in scancels[0], scancels  # the array's id only
        end = time.monotonic() + 30
        while live_tasks(prefix):
            assert time.monotonic() < end, live_tasks(prefix)
            time.sleep(0.5)
        rows = status_rows(bundle)
        assert {row["state"] for row in rows.values()} <= {"CANCELLED", "DROPPED"}, rows
        assert oellm("reconcile", str(bundle)).returncode in (0, 1)
        assert len(ledger(bundle, "c_0")) == 1, "nothing was submitted again"
    finally:
        cancel_prefix(prefix)


def live_tasks(prefix: str) -> list[str]:
    listed = subprocess.run(
        ["squeue", "--me", "-h", "-r", "-t", "PD,R,CG,S", "-o", "%i|%j"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [
        job_id
        for job_id, _, name in (line.partition("|") for line in listed.stdout.splitlines())
        if tags.tag_of(name).startswith(prefix)
    ]


def shims(tmp_path: Path) -> dict[str, str]:
    """scancel behind a shim that logs its command line (the real one runs)."""
    folder = tmp_path / "shims"
    folder.mkdir()
    real = shutil.which("scancel")
    assert real is not None
    shim = folder / "scancel"
    shim.write_text(
        f'#!/bin/sh\necho scancel "$@" >> "{tmp_path / "calls.log"}"\nexec {real} "$@"\n'
    )
    shim.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
