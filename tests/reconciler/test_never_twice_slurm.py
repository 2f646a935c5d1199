"""Never twice, never lost, on the real local SLURM: lost or damaged records never mean a second
submission, the state and the tag key stay put when an incidental setting moves, a user cancel
that SLURM did not take is sent again, a cancel condition waits for the restart policy, a
removed array member runs as compiled, and a finished chain shows the link that ended it.

Each run is a separate `oellm` process, as cron would start it. "Exactly one submission" is
counted in squeue and sacct: every job of a test runs from that test's own folder (its working
directory), and its name carries its tag, `oellm.<key>.<job>.<attempt>` (tags.py).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oellm.reconciler import tags
from tests.helpers import wait_for, write
from tests.reconciler.slurm_helpers import compile_to, ledger, oellm
from tests.reconciler.slurm_helpers import status_rows as status

pytestmark = pytest.mark.slurm

ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object, tmp_path: Path) -> Iterator[None]:
    yield
    cancel_under(tmp_path)


# --- reading SLURM ------------------------------------------------------------------------------


def _ours(workdir: str, where: Path) -> bool:
    return any(workdir == str(p) or workdir.startswith(f"{p}/") for p in (where, where.resolve()))


def _ask(argv: list[str]) -> str:
    """stdout of a query, retried while the controller does not answer (other tests on this
    cluster restart it on purpose)."""
    end = time.monotonic() + 60
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode == 0:
            return done.stdout
        assert time.monotonic() < end, f"{argv[0]} kept failing: {done.stderr}"
        time.sleep(2)


def slurm_jobs(where: Path) -> dict[str, tuple[str, str]]:
    """job id -> (tag, state) of every job run from `where` (or a folder in it), from sacct
    and then squeue (which is current for a job that just changed)."""
    acct = _ask(
        ["sacct", "-X", "-P", "-n", "-S", "now-2hours", "-E", "now"]
        + ["--format=JobID,JobName,State,WorkDir", "-s", "PD,R,CD,F,CA,TO,NF,PR,OOM,BF,DL,RQ,S"]
    )
    queue = _ask(["squeue", "--me", "-t", "all", "-h", "-o", "%i|%j|%T|%Z"])
    found: dict[str, tuple[str, str]] = {}
    for line in [*acct.splitlines(), *queue.splitlines()]:
        parts = line.split("|")
        if len(parts) < 4 or not _ours(parts[3], where):
            continue
        job_id, name, state = parts[:3]
        if name == "allocation" and job_id in found:
            continue  # sacct names a just-ended job so for a few seconds
        found[job_id] = (tags.tag_of(name), state.split(" ")[0])
    return found


def submissions(where: Path) -> collections.Counter[str]:
    """How many SLURM jobs each oellm job has had (by the job part of the tag)."""
    return collections.Counter(
        name.split(".")[2]
        for name, _ in slurm_jobs(where).values()
        if name.startswith("oellm.") and name.count(".") >= 3
    )


def state_of(job_id: str, where: Path) -> str | None:
    return slurm_jobs(where).get(job_id, ("", None))[1]


def cancel_under(where: Path) -> None:
    """Cancel every job of ours still queued or running from `where` (held jobs would stay)."""
    queue = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%i|%Z"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    ids = sorted(
        {
            job_id.split("_")[0]  # a pending array shows as 7_[0-2]: cancel the whole array
            for job_id, _, workdir in (line.partition("|") for line in queue.stdout.splitlines())
            if _ours(workdir, where)
        }
    )
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=60)


def release(job_id: str) -> None:
    subprocess.run(["scontrol", "release", job_id], check=True, timeout=60)


# --- bundles ------------------------------------------------------------------------------------


def state_dir(bundle: Path) -> Path:
    written = json.loads((bundle / "plan.lock.json").read_text())["project"]["state_dir"]
    path = Path(written)
    return path if path.is_absolute() else bundle.parent / path


def record(bundle: Path, job: str, attempt: int = 1) -> Path:
    return state_dir(bundle) / "jobs" / job / f"attempt-{attempt:04d}.json"


def submitted(lines: str) -> list[str]:
    """The jobs a round printed as submitted (`submitted JOB ...`)."""
    return [line.split()[1] for line in lines.splitlines() if line.startswith("submitted ")]


def reconcile(bundle: Path, *args: str, codes: tuple[int, ...] = (0, 1)) -> str:
    run = oellm("reconcile", str(bundle), *args)
    assert run.returncode in codes, run.stdout + run.stderr
    return run.stdout


HELD = """
project: {{name: {project}}}
job: {{name: "{prefix}_${{vars.i}}"}}
vars: {{i: 0}}
backend: {{bash: {{command: "echo hello"}}}}
slurm: {{sbatch: {{hold: true}}}}
sweep:
  params: {{vars.i: [{values}]}}
"""


def held(tmp_path: Path, project: str, prefix: str, values: str, name: str = "bundle") -> Path:
    return compile_to(
        tmp_path, HELD.format(project=project, prefix=prefix, values=values), name=name
    )


def submit_all(bundle: Path, jobs: list[str]) -> dict[str, str]:
    """One round that submits every job (held); job -> SLURM id."""
    out = reconcile(bundle, codes=(1,))
    assert sorted(submitted(out)) == sorted(jobs), out
    rows = status(bundle)
    ids = {job: rows[job]["job_id"] for job in jobs}
    assert all(ids.values()), rows
    return ids


# --- 2. lost records never mean a second submission ---------------------------------------------


def test_a_lost_record_is_recovered_from_slurm_not_submitted_again(tmp_path: Path) -> None:
    bundle = held(tmp_path, "nt_lost", "lost", "a, b")
    ids = submit_all(bundle, ["lost_a", "lost_b"])
    record(bundle, "lost_a").unlink()

    out = reconcile(bundle)
    assert submitted(out) == [], out
    assert any("recovered" in line and "lost_a" in line for line in out.splitlines()), out
    rows = status(bundle)
    assert {job: rows[job]["job_id"] for job in ids} == ids
    assert submissions(tmp_path) == {"lost_a": 1, "lost_b": 1}


def test_a_deleted_state_dir_is_recovered_from_slurm(tmp_path: Path) -> None:
    bundle = held(tmp_path, "nt_gone", "gone", "a, b, c")
    ids = submit_all(bundle, ["gone_a", "gone_b", "gone_c"])
    shutil.rmtree(state_dir(bundle))

    out = reconcile(bundle)
    assert submitted(out) == [], out
    for job in ids:
        assert any("recovered" in line and job in line for line in out.splitlines()), out
    rows = status(bundle)
    assert {job: rows[job]["job_id"] for job in ids} == ids
    assert submissions(tmp_path) == {"gone_a": 1, "gone_b": 1, "gone_c": 1}


def test_a_garbled_record_is_named_and_the_other_jobs_still_act(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    bundle = compile_to(
        tmp_path,
        f"""
        project: {{name: nt_garbled}}
        job: {{name: "gb_${{vars.i}}"}}
        vars: {{i: 0}}
        backend: {{bash: {{command: "echo hello"}}}}
        slurm: {{sbatch: {{hold: true}}}}
        sweep:
          type: list
          groups:
            - params: {{vars.i: [a]}}
            - params: {{vars.i: [b]}}
              job.start_conditions:
                - class_name: FileExistsCondition
                  path: "{ready}"
        """,
    )
    first = submit_all(bundle, ["gb_a"])
    damaged = record(bundle, "gb_a")
    damaged.write_text("{not json")
    ready.touch()

    run = oellm("reconcile", str(bundle))
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(damaged) in run.stderr and "Traceback" not in run.stderr, run.stderr
    hint = run.stderr.partition("hint:")[2]
    assert "move" in hint and "aside" in hint, run.stderr
    # The damaged record stops only its own job: gb_b is submitted in the same round.
    assert submitted(run.stdout) == ["gb_b"], run.stdout + run.stderr

    damaged.rename(tmp_path / "attempt-0001.json.aside")
    out = reconcile(bundle)
    assert submitted(out) == [], out
    assert any("recovered" in line and "gb_a" in line for line in out.splitlines()), out
    assert status(bundle)["gb_a"]["job_id"] == first["gb_a"]
    assert submissions(tmp_path) == {"gb_a": 1, "gb_b": 1}


# --- 3. the tag key and the state location do not follow incidental settings ------------------

# The job folders and logs are fixed, so OUTPUT_DIR moves only the state dir: the scripts of
# both compiles are the same and no job counts as changed.
MOVABLE = """
project: {{name: nt_move}}
job:
  name: "mv_${{vars.i}}"
  base_output_dir: "{work}/${{vars.i}}"
  log_path: "{work}/slurm-%j.log"
vars: {{i: 0}}
backend: {{bash: {{command: "echo hello"}}}}
slurm: {{sbatch: {{hold: true}}}}
sweep:
  params: {{vars.i: [a, b]}}
"""


def compile_cli(
    exp: Path, bundle: Path, output_dir: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    env = {"OUTPUT_DIR": str(output_dir)}
    return oellm("compile", str(exp), "-o", str(bundle), *flags, env=env)


def _movable(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    exp = write(tmp_path / "exp.yaml", MOVABLE.format(work=tmp_path / "work"))
    bundle, a, b = tmp_path / "bundle", tmp_path / "A", tmp_path / "B"
    done = compile_cli(exp, bundle, a)
    assert done.returncode == 0, done.stderr
    return exp, bundle, a, b


def test_a_moved_output_dir_is_refused_then_the_state_moves(tmp_path: Path) -> None:
    exp, bundle, a, b = _movable(tmp_path)
    ids = submit_all(bundle, ["mv_a", "mv_b"])

    refused = compile_cli(exp, bundle, b)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    for text in (str(a / ".oellm" / "nt_move"), str(b / ".oellm" / "nt_move")):
        assert text in refused.stderr, refused.stderr
    assert "--move-state" in refused.stderr and "--fresh-state" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    moved = compile_cli(exp, bundle, b, "--move-state")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "moved the state" in moved.stdout, moved.stdout
    out = reconcile(bundle)
    assert submitted(out) == [], out
    rows = status(bundle)
    assert {job: rows[job]["job_id"] for job in ids} == ids
    assert submissions(tmp_path) == {"mv_a": 1, "mv_b": 1}


def test_a_fresh_state_submits_again_under_a_new_key(tmp_path: Path) -> None:
    exp, bundle, _, b = _movable(tmp_path)
    ids = submit_all(bundle, ["mv_a", "mv_b"])
    old = {job: ledger(bundle, job)[0]["tag"] for job in ids}

    fresh = compile_cli(exp, bundle, b, "--fresh-state")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    out = reconcile(bundle, codes=(1,))
    assert sorted(submitted(out)) == ["mv_a", "mv_b"], out
    new = {job: ledger(bundle, job)[0]["tag"] for job in ids}
    for job in ids:
        assert new[job].split(".")[1] != old[job].split(".")[1], (old, new)
    rows = status(bundle)
    assert all(rows[job]["job_id"] != ids[job] for job in ids), (ids, rows)
    names = {name for name, _ in slurm_jobs(tmp_path).values()}
    assert set(old.values()) | set(new.values()) <= names, names


def test_two_experiments_sharing_one_state_dir_are_refused(tmp_path: Path) -> None:
    first = held(tmp_path, "nt_shared", "one", "a", name="b1")
    second = held(tmp_path, "nt_shared", "two", "a", name="b2")
    submit_all(first, ["one_a"])

    run = oellm("reconcile", str(second))
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(first) in run.stderr or str(first.resolve()) in run.stderr, run.stderr
    assert str(state_dir(second)) in run.stderr, run.stderr
    hint = run.stderr.partition("hint:")[2]
    assert "project.state_dir" in hint or "project.name" in hint, run.stderr
    assert submitted(run.stdout) == [], run.stdout
    assert submissions(tmp_path) == {"one_a": 1}


# --- 4. a user cancel that SLURM did not take is sent again -------------------------------------

FAKE_SCANCEL = """#!/bin/sh
echo "scancel: error: Unable to contact slurm controller (connect failure)" >&2
exit 1
"""


def test_a_cancel_slurm_did_not_take_is_sent_by_the_next_round(tmp_path: Path) -> None:
    bundle = held(tmp_path, "nt_cancel", "cn", "a")
    job_id = submit_all(bundle, ["cn_a"])["cn_a"]
    fake = tmp_path / "fakebin" / "scancel"
    write(fake, FAKE_SCANCEL).chmod(0o755)

    path = f"{fake.parent}{os.pathsep}{os.environ['PATH']}"
    refused = oellm("cancel", str(bundle), "cn_a", env={"PATH": path})
    said = refused.stdout + refused.stderr
    assert refused.returncode == 75, said
    assert "recorded" in said.lower() and "Traceback" not in said, said
    assert state_of(job_id, tmp_path) == "PENDING"

    reconcile(bundle)
    wait_for(f"job {job_id} cancelled", lambda: state_of(job_id, tmp_path) == "CANCELLED")
    assert status(bundle)["cn_a"]["state"] == "CANCELLED"
    for _ in range(2):
        reconcile(bundle)
    # Later rounds record the cancel (the row may read DROPPED then); none submits it again.
    row = status(bundle)["cn_a"]
    assert (row["state"], row["attempt"]) in (("CANCELLED", 1), ("DROPPED", 1)), row
    assert submissions(tmp_path) == {"cn_a": 1}


def test_a_cancel_during_a_round_waits_then_says_try_again(tmp_path: Path) -> None:
    bundle = held(tmp_path, "nt_busy", "bz", "a")
    job_id = submit_all(bundle, ["bz_a"])["bz_a"]
    lock = state_dir(bundle) / "reconcile.lock"
    background = subprocess.Popen(
        [sys.executable, "-m", "oellm", "reconcile", str(bundle), "--wait", "--interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OELLM_INTENT_GRACE_SECONDS": "3"},
    )
    try:

        def holds_lock() -> bool:
            try:
                return bool(json.loads(lock.read_text())["pid"] == background.pid)
            except (OSError, ValueError, KeyError):
                return False

        wait_for("the background round to take the lock", holds_lock, 30)
        began = time.monotonic()
        busy = oellm("cancel", str(bundle), env={"OELLM_LOCK_WAIT_SECONDS": "5"}, timeout=60)
        took = time.monotonic() - began
        said = busy.stdout + busy.stderr
        assert busy.returncode == 75, said
        assert "another reconcile" in said and "Traceback" not in said, said
        assert took <= 15, f"cancel took {took:.1f}s"
        assert state_of(job_id, tmp_path) == "PENDING"
    finally:
        if background.poll() is None:
            background.send_signal(signal.SIGTERM)
        try:
            background.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            background.kill()
            background.communicate(timeout=30)
    assert background.returncode is not None

    acted = oellm("cancel", str(bundle))
    assert acted.returncode == 1, acted.stdout + acted.stderr
    wait_for(f"job {job_id} cancelled", lambda: state_of(job_id, tmp_path) == "CANCELLED")
    assert submissions(tmp_path) == {"bz_a": 1}


# --- 5. a cancel condition waits for the restart policy -----------------------------------------


def test_a_cancel_condition_does_not_fire_on_a_failure_that_is_retried(tmp_path: Path) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: nt_retry}
        job:
          name: "rt_${stage}"
          restart: {on: [FAILED], max_attempts: 3}
        vars: {cmd: "true", note: ""}
        backend: {bash: {command: "${vars.cmd}"}}
        sweep:
          type: list
          configs:
            - stage: stable
              vars.cmd: >-
                cd "${job.base_output_dir}";
                if [ -e marker ]; then echo second; exit 0; else touch marker; exit 1; fi
            - stage: decay
              vars.cmd: "echo decay ran"
              vars.note: "\\\\${sibling.stable.name}"
              job.cancel_conditions:
                - {class_name: SlurmStateCondition, job_name: rt_stable, state: FAILED}
        """,
    )
    lock = json.loads((bundle / "plan.lock.json").read_text())
    decay = next(job for job in lock["jobs"] if job["name"] == "rt_decay")
    assert decay["depends_on"] == ["rt_stable"], decay

    run = oellm("reconcile", str(bundle), "--wait", "--interval", "1", timeout=180)
    rows = status(bundle)
    assert rows["rt_decay"]["state"] == "COMPLETED", (rows, run.stdout + run.stderr)
    stable = ledger(bundle, "rt_stable")
    assert [(a["attempt"], a["final_state"]) for a in stable] == [(1, "FAILED"), (2, "COMPLETED")]
    assert [a["final_state"] for a in ledger(bundle, "rt_decay")] == ["COMPLETED"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "dropped" not in run.stdout.lower(), run.stdout


# --- 6. records with valid JSON but wrong types -------------------------------------------------

DAMAGE: dict[str, Any] = {
    "attempt": "1",
    "intent_at": "yesterday",
    "events": "x",
    "phase": "bogus",
    "job_id": 123,
}


def damage(path: Path, field: str) -> None:
    data = json.loads(path.read_text())
    data[field] = DAMAGE[field]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("field", list(DAMAGE))
def test_a_record_with_a_wrong_type_is_named_and_nothing_is_submitted(
    tmp_path: Path, field: str
) -> None:
    bundle = held(tmp_path, "nt_types", "ty", "a")
    submit_all(bundle, ["ty_a"])
    path = record(bundle, "ty_a")
    damage(path, field)

    run = oellm("reconcile", str(bundle))
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(path) in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert submitted(run.stdout) == [], run.stdout
    assert not record(bundle, "ty_a", 2).exists()
    assert submissions(tmp_path) == {"ty_a": 1}


def test_every_damaged_record_is_named_in_one_round(tmp_path: Path) -> None:
    fields = list(DAMAGE)
    bundle = held(tmp_path, "nt_types_all", "ta", ", ".join(fields))
    jobs = [f"ta_{field}" for field in fields]
    submit_all(bundle, jobs)
    for field, job in zip(fields, jobs, strict=True):
        damage(record(bundle, job), field)

    run = oellm("reconcile", str(bundle))
    assert run.returncode == 2, run.stdout + run.stderr
    missing = [job for job in jobs if str(record(bundle, job)) not in run.stderr]
    assert missing == [], run.stderr
    assert submitted(run.stdout) == [], run.stdout
    assert not any(record(bundle, job, 2).exists() for job in jobs)
    assert submissions(tmp_path) == {job: 1 for job in jobs}


# --- 7. a queued array member removed by a recompile runs as compiled ---------------------------

ARRAY = """
project: {{name: nt_array}}
stage: train
job: {{name: "m_${{vars.i}}"}}
vars: {{i: 0}}
backend: {{bash: {{command: "echo member ${{vars.i}} ran to its end"}}}}
slurm: {{array: true, sbatch: {{hold: true, time: 1}}}}
sweep:
  params: {{vars.i: [{values}]}}
"""


def test_a_removed_array_member_still_queued_runs_as_compiled(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, ARRAY.format(values="0, 1, 2"))
    out = reconcile(bundle, codes=(1,))
    assert out.count("of array train") == 3, out
    ids = {job: row["job_id"] for job, row in status(bundle).items()}
    array_id = ids["m_0"].split("_")[0]
    assert ids == {f"m_{i}": f"{array_id}_{i}" for i in range(3)}, ids

    compile_to(tmp_path, ARRAY.format(values="0, 1"))
    release(array_id)
    removed = f"{array_id}_2"

    def removed_task_ended() -> bool:
        reconcile(bundle, codes=(0, 1, 75))
        return state_of(removed, tmp_path) in ENDED

    wait_for(f"task {removed} to end", removed_task_ended, 75)
    assert state_of(removed, tmp_path) == "COMPLETED"
    log = tmp_path / "out" / "arrays" / "train" / f"slurm-{removed}.log"
    assert "member 2 ran to its end" in log.read_text(), log.read_text()


# --- 8. a finished chain shows the link that ended it -------------------------------------------


def test_a_finished_chain_shows_the_link_that_ended_it(tmp_path: Path) -> None:
    # Link 1 runs into its 1-minute limit (TIMEOUT; SLURM enforces it within about 30 s more);
    # link 2 finds the marker and completes.
    bundle = compile_to(
        tmp_path,
        """
        project: {name: nt_chain}
        slurm: {sbatch: {time: 1}}
        job: {chain_repeat: 2}
        backend:
          bash:
            command: |
              if [ -e "${job.base_output_dir}/ran" ]; then echo "link done"; exit 0; fi
              touch "${job.base_output_dir}/ran"
              sleep 300
        """,
    )
    out = reconcile(bundle, codes=(1,))
    assert "link 2/2" in out, out
    (attempt,) = ledger(bundle, "nt_chain")
    first, second = (link["job_id"] for link in attempt["links"])
    wait_for(f"link 2 (job {second}) to end", lambda: state_of(second, tmp_path) in ENDED, 150)

    def settled() -> bool:
        reconcile(bundle, codes=(0, 1, 75))
        return bool(ledger(bundle, "nt_chain")[-1]["phase"] == "finished")

    wait_for("the chain to be recorded as ended", settled, 30)
    assert state_of(first, tmp_path) == "TIMEOUT"
    row = status(bundle)["nt_chain"]
    assert row["job_id"] == second, row
    assert row["state"] == state_of(second, tmp_path) == "COMPLETED", row
