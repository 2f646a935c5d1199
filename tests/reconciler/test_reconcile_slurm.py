"""`oellm reconcile` against the real local SLURM: stages end to end, exactly-once under
SIGKILL at every step of a submission, concurrent runs, and a controller that goes away.

Each run is a separate `oellm` process, as cron would start it.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oellm.reconciler import tags
from tests.helpers import REPO
from tests.reconciler.slurm_helpers import (
    cancel_prefix,
    compile_to,
    oellm,
    queued_names,
    tag_prefix,
)
from tests.reconciler.slurm_helpers import status_rows as status

pytestmark = pytest.mark.slurm

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"


def sacct_names(prefix: str, expect: int | None = None) -> list[str]:
    """Tags of the jobs in accounting (read from their names). Right after a job ends, sacct
    may show its name as `allocation` for a few seconds, so with `expect` it polls until that
    many appear."""
    end = time.monotonic() + 20
    while True:
        names = _sacct_names(prefix)
        if expect is None or len(names) >= expect or time.monotonic() > end:
            return names
        time.sleep(1)


def _sacct_names(prefix: str) -> list[str]:
    result = subprocess.run(
        [
            "sacct",
            "-X",
            "-P",
            "-n",
            "-S",
            "now-1hour",
            "-E",
            "now",
            "--format=JobName",
            "-s",
            "PD,R,CD,F,CA,TO,NF,PR,OOM,BF,DL,RQ,S",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    found = (tags.tag_of(name) for name in result.stdout.split())
    return [tag for tag in found if tag.startswith(prefix)]


def reconcile_until_done(bundle: Path, deadline: float = 150) -> list[str]:
    lines: list[str] = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        run = oellm("reconcile", str(bundle))
        # 75: the controller is away for a moment; the next round retries, as cron would.
        assert run.returncode in (0, 1, 75), run.stdout + run.stderr
        lines.extend(run.stdout.splitlines())
        if run.returncode == 75:
            time.sleep(2)
            continue
        rows = status(bundle)
        if all(
            r["state"] in ("COMPLETED", "FAILED", "CANCELLED", "DROPPED") for r in rows.values()
        ):
            # `status` shows what it observes; a job that ended after the round above is
            # recorded by one more round (so the next one is quiet).
            final = oellm("reconcile", str(bundle))
            assert final.returncode in (0, 1), final.stdout + final.stderr
            return lines + final.stdout.splitlines()
        time.sleep(1)
    raise AssertionError(f"not done in {deadline}s: {status(bundle)}\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> Iterator[None]:
    yield


ONE_JOB = """
project: {{name: {name}}}
backend: {{bash: {{command: "echo hello; sleep {sleep}"}}}}
"""


def test_stages_run_in_order_gated_by_the_checkpoint_marker(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: stages}
        job: {name: "st_${vars.lr}_${stage}"}
        vars: {lr: 0, load: none}
        backend:
          bash:
            command: |
              echo "lr=${vars.lr} stage=${stage} load=${vars.load}"
              sleep 2
              mkdir -p "${job.base_output_dir}/checkpoints"
              date +%s.%N > "${job.base_output_dir}/checkpoints/done.txt"
        sweep:
          type: list
          groups:
            - params: {vars.lr: [1, 2]}
              defaults: {stage: stable}
            - params: {vars.lr: [1, 2]}
              defaults:
                stage: decay
                vars.load: "\\\\${sibling.stable.output_dir}/checkpoints"
              job.start_conditions:
                - class_name: FileExistsCondition
                  path: "\\\\${sibling.stable.output_dir}/checkpoints/done.txt"
        """,
    )
    first = oellm("reconcile", str(bundle))
    assert first.returncode == 1
    assert sorted(line.split()[1] for line in first.stdout.splitlines()) == [
        "st_1_stable",
        "st_2_stable",
    ]  # decay jobs wait for their siblings
    lines = reconcile_until_done(bundle)
    rows = status(bundle)
    assert {r["state"] for r in rows.values()} == {"COMPLETED"}
    out = tmp_path / "out"
    for lr in (1, 2):
        done = float((out / f"st_{lr}_stable/checkpoints/done.txt").read_text())
        job_id = rows[f"st_{lr}_decay"]["job_id"]
        started = (out / f"st_{lr}_decay/.oellm/{job_id}.started").stat().st_mtime
        assert started >= done, "a decay job started before its stable sibling finished"
        log = (out / f"st_{lr}_decay/current.log").read_text()
        assert f"load={out}/st_{lr}_stable/checkpoints" in log
    prefix = tag_prefix(bundle)
    counts = collections.Counter(n.rsplit(".", 1)[0] for n in sacct_names(prefix, expect=4))
    assert sorted(counts.values()) == [1, 1, 1, 1], counts
    assert any("submitted st_1_decay" in line for line in lines)
    # Nothing left to do: a quiet run (cron mails nothing).
    quiet = oellm("reconcile", str(bundle))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


@pytest.mark.parametrize("point", ["before-intent", "after-intent", "after-sbatch", "after-record"])
def test_killed_at_any_point_of_a_submission_submits_exactly_once(
    tmp_path: Path, point: str
) -> None:
    bundle = compile_to(tmp_path, ONE_JOB.format(name=f"crash_{point.replace('-', '_')}", sleep=1))
    crashed = oellm("reconcile", str(bundle), env={"OELLM_CRASH_AT": point})
    assert crashed.returncode == -9
    reconcile_until_done(bundle)
    prefix = tag_prefix(bundle)
    names = sacct_names(prefix, expect=1)
    jobs = collections.Counter(n.rsplit(".", 1)[0] for n in names)
    assert list(jobs.values()) == [1], names
    assert status(bundle)[f"crash_{point.replace('-', '_')}"]["state"] == "COMPLETED"


def test_concurrent_reconcilers_never_submit_twice(tmp_path: Path) -> None:
    sweep = ", ".join(str(i) for i in range(50))
    bundle = compile_to(
        tmp_path,
        f"""
        project: {{name: many}}
        job: {{name: "many_${{vars.i}}"}}
        vars: {{i: 0}}
        backend: {{bash: {{command: "sleep 600"}}}}
        slurm: {{sbatch: {{hold: true}}}}
        sweep:
          params: {{vars.i: [{sweep}]}}
        """,
    )
    env = {**os.environ, "OELLM_INTENT_GRACE_SECONDS": "3"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "oellm", "reconcile", str(bundle)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(5)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    try:
        assert sorted(codes) in (
            [0, 0, 0, 0, 1],
            [0, 0, 0, 1, 1],
            [0, 0, 1, 1, 1],
            [0, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
        ), outputs
        busy = sum("another reconcile is running" in out for out, _ in outputs)
        assert busy >= 1, outputs
        # Run twice more to be sure nothing more is submitted, then count.
        for _ in range(2):
            oellm("reconcile", str(bundle))
        names = queued_names(tag_prefix(bundle))
        assert len(names) == 50 and len(set(n.rsplit(".", 1)[0] for n in names)) == 50, names
    finally:
        cancel_prefix(tag_prefix(bundle))


def test_controller_down_then_back(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, ONE_JOB.format(name="ctld_down", sleep=1))
    subprocess.run(["bash", str(CLUSTER), "stop-ctld"], check=True, timeout=120)
    try:
        down = oellm("reconcile", str(bundle), timeout=180)
        assert down.returncode == 75, down.stdout + down.stderr
        assert "Unable to contact slurm controller" in down.stderr
    finally:
        subprocess.run(["bash", str(CLUSTER), "start-ctld"], check=True, timeout=180)
    reconcile_until_done(bundle, deadline=180)
    names = sacct_names(tag_prefix(bundle), expect=1)
    assert len(names) == 1, names


def test_damaged_state_file_is_named_and_nothing_is_lost(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, ONE_JOB.format(name="damaged", sleep=30))
    assert oellm("reconcile", str(bundle)).returncode == 1
    record = next((tmp_path / "out").rglob("attempt-0001.json"))
    saved = record.read_text()
    record.write_text("garbage{")
    run = oellm("reconcile", str(bundle))
    assert run.returncode == 2
    assert str(record) in run.stderr and "damaged state record" in run.stderr
    assert "Traceback" not in run.stderr
    record.write_text(saved)
    assert status(bundle)["damaged"]["state"] in ("PENDING", "RUNNING")
    assert oellm("cancel", str(bundle)).returncode == 1
    reconcile_until_done(bundle)
    assert len(sacct_names(tag_prefix(bundle), expect=1)) == 1


def test_slurm_dependency_queues_downstream_at_once(tmp_path: Path) -> None:
    """`job.dependency: slurm`: one round queues both stages; SLURM starts the second when
    the first completed, and cancels it when the first failed."""
    bundle = compile_to(
        tmp_path,
        """
        project: {name: afterok}
        job: {name: "ao_${vars.fail}_${stage}", dependency: slurm}
        vars: {fail: 0, note: ""}
        backend: {bash: {command: "sleep 2; exit ${vars.fail}"}}
        sweep:
          type: product
          groups:
            - params: {vars.fail: [0, 1]}
            - type: list
              configs:
                - {stage: first}
                - {stage: second, vars.note: "\\\\${sibling.first.name}"}
        """,
    )
    first = oellm("reconcile", str(bundle))
    assert first.returncode == 1, first.stdout + first.stderr
    submitted = [
        line.split()[1] for line in first.stdout.splitlines() if line.startswith("submitted")
    ]
    assert sorted(submitted) == ["ao_0_first", "ao_0_second", "ao_1_first", "ao_1_second"]
    assert "afterok" in first.stdout
    reconcile_until_done(bundle, deadline=120)
    rows = status(bundle)
    assert rows["ao_0_second"]["state"] == "COMPLETED"
    assert rows["ao_1_first"]["state"] == "FAILED"
    assert rows["ao_1_second"]["state"] == "CANCELLED"
    assert rows["ao_1_second"]["reason"] == "upstream ao_1_first ended FAILED"
