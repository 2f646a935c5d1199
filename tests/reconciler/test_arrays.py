"""Array task ids, --array specs, log paths and per-task `current_<index>.log` links."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.write import write_bundle
from oellm.reconciler.act import act
from oellm.reconciler.actions import Submit
from oellm.reconciler.arrays import (
    array_spec,
    current_for_index,
    expand_task_ids,
    log_for,
    parse_indices,
    resubmit_args,
    split_task_id,
    task_id,
)
from oellm.reconciler.bundle import Bundle, load_bundle
from oellm.reconciler.current_log import point_current_log
from oellm.reconciler.model import Attempt, LockJob, LogState
from oellm.reconciler.observe import _read_logs, tags_of
from oellm.reconciler.records import Records
from oellm.reconciler.schedulers.slurm import SlurmScheduler
from oellm.reconciler.schedulers.slurm_parse import parse_squeue
from tests.helpers import write
from tests.reconciler.fakes import FakeRun, ok, recorded


def test_task_ids() -> None:
    assert split_task_id("11227_0") == ("11227", 0)
    assert split_task_id("42") == ("42", None)
    assert task_id("11229", 2) == "11229_2"
    for bad in ("7_[0-3]", "x", "1_", ""):
        with pytest.raises(ValueError):
            split_task_id(bad)


def test_folded_squeue_rows_expand_to_their_tasks() -> None:
    # Recorded: without -r, squeue folds an array's pending tasks into one row.
    folded = [line.split("|")[0] for line in recorded("squeue_mix.txt").stdout.splitlines()]
    assert "7_[0-3]" in folded
    assert expand_task_ids("7_[0-3]") == ["7_0", "7_1", "7_2", "7_3"]
    assert expand_task_ids("11227_[1-3%1]") == ["11227_1", "11227_2", "11227_3"]
    assert expand_task_ids("9_[1,4-5]") == ["9_1", "9_4", "9_5"]
    assert expand_task_ids("9_1") == ["9_1"] and expand_task_ids("12") == ["12"]


def test_array_specs() -> None:
    assert array_spec([3, 0, 1, 2, 7]) == "0-3,7"
    assert array_spec([5], throttle=2) == "5%2"
    assert array_spec(range(0, 1000)) == "0-999"
    assert parse_indices("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_indices("1-7:2") == [1, 3, 5, 7]
    assert resubmit_args(4) == ("--array=4",)
    for bad in ("3-1", "a", "1-7:0"):
        with pytest.raises(ValueError):
            parse_indices(bad)
    with pytest.raises(ValueError):
        array_spec([])


def test_log_paths_of_jobs_and_tasks() -> None:
    assert log_for("out/slurm-%j.log", "42") == "out/slurm-42.log"
    assert log_for("out/%A.log", "42") == "out/42.log"
    assert log_for("out/slurm-%A_%a.log", "11229_2") == "out/slurm-11229_2.log"
    assert current_for_index("out/x/current.log", 4) == "out/x/current_4.log"
    assert current_for_index("current", 0) == "current_0"
    assert current_for_index("a.b/cur.rent.log", 1) == "a.b/cur.rent_1.log"


def lock_job(**changes: Any) -> LockJob:
    """An array member: the lockfile model's defaults, and `changes`."""
    base: dict[str, Any] = dict(
        name="t",
        script="jobs/t.sbatch",
        sha256="0" * 64,
        output_dir="out",
        log_path="out/slurm-%A_%a.log",
        log_path_current="out/current.log",
        array=True,
        array_group="g",
        array_index=3,
    )
    return LockJob(**{**base, **changes})


def test_each_task_gets_its_own_current_link_repointed_on_each_attempt(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path / "bundle", "b" * 64, "p", "out", "state", (lock_job(),))
    (tmp_path / "out").mkdir()
    point_current_log(bundle, lock_job(), "100_3")
    point_current_log(bundle, lock_job(array_index=4), "100_4")
    assert os.readlink(tmp_path / "out/current_3.log") == "slurm-100_3.log"
    assert os.readlink(tmp_path / "out/current_4.log") == "slurm-100_4.log"
    point_current_log(bundle, lock_job(), "107_3")  # task 3 submitted again, alone
    assert os.readlink(tmp_path / "out/current_3.log") == "slurm-107_3.log"
    assert os.readlink(tmp_path / "out/current_4.log") == "slurm-100_4.log"
    assert not (tmp_path / "out/current.log").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "current_3.log",
        "current_4.log",
    ]


# --- arrays in the reconciler: rows by member tag, batching, one sbatch per array ----------


ARRAY_EXPERIMENT = """
project: {name: arr}
stage: train
job: {name: "t_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "echo ${vars.i}"}}
slurm: {array: true, array_throttle: 2}
sweep:
  params: {vars.i: [0, 1, 2]}
"""


def now() -> datetime:
    return datetime.now().astimezone()


def array_bundle(tmp_path: Path) -> Bundle:
    exp = write(tmp_path / "exp.yaml", ARRAY_EXPERIMENT)
    compiled = compile_bundle(CompileRequest(experiment=exp, env={"OUTPUT_DIR": "out"}))
    write_bundle(compiled, tmp_path / "b")
    return load_bundle(tmp_path / "b")


def test_each_array_task_is_found_by_its_member_tag() -> None:
    rows = parse_squeue("7_[1-2%2]|oellm.k.train.array-ab|PENDING|JobArrayTaskLimit|x\n"
                        "7_0|oellm.k.train.array-ab|RUNNING|None|x\n"
                        "9|oellm.k.solo.1|RUNNING|None|x\n")  # fmt: skip
    by_tag = tags_of(rows)
    assert {tag: row.job_id for tag, row in by_tag.items() if "[" in tag} == {
        "oellm.k.train.array-ab[0]": "7_0",
        "oellm.k.train.array-ab[1]": "7_1",
        "oellm.k.train.array-ab[2]": "7_2",
    }
    assert by_tag["oellm.k.solo.1"].job_id == "9"


def test_rows_are_indexed_by_tag_only_for_an_attempt_without_its_job_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recorded job id is taken as it is (`jobs_of`); the rows are indexed by tag on the
    first lookup only, once."""
    from oellm.reconciler import observe

    split: list[str] = []
    real_split = observe.split_task_id

    def counted(job_id: str) -> tuple[str, int | None]:
        split.append(job_id)
        return real_split(job_id)

    monkeypatch.setattr(observe, "split_task_id", counted)
    rows = parse_squeue("7_[0-2]|oellm.k.train.array-ab|PENDING|JobHeldUser|x\n")
    by_tag = tags_of(rows)
    recorded_id = attempt_record(job_id="7_1", tag="oellm.k.train.array-ab[1]")
    assert observe.jobs_of(recorded_id, by_tag) == [(0, "7_1")]
    assert split == [], "nothing indexed while every job id is recorded"
    unrecorded = attempt_record(job_id=None, tag="oellm.k.train.array-ab[2]")
    assert observe.jobs_of(unrecorded, by_tag) == [(0, "7_2")]
    assert observe.jobs_of(attempt_record(job_id=None, tag="oellm.k.x.1"), by_tag) == []
    assert split == ["7_0", "7_1", "7_2"], "indexed once, on the first lookup"
    assert dict(by_tag) == {
        "oellm.k.train.array-ab": rows[-1],
        **{f"oellm.k.train.array-ab[{i}]": rows[i] for i in range(3)},
    }


def attempt_record(job_id: str | None, tag: str) -> Attempt:
    return Attempt(
        job="t",
        attempt=1,
        tag=tag,
        bundle_id="b",
        script_sha256="s",
        scheduler="slurm",
        cause="ready",
        phase="submitted" if job_id else "intent",
        intent_at="2026-11-30T12:00:00+00:00",
        job_id=job_id,
    )


def test_ready_members_of_one_array_go_as_one_sbatch(tmp_path: Path) -> None:
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    fake = FakeRun({"sbatch": ok("500\n")})
    actions = [
        Submit(f"t_{i}", "first submission", attempt=1, cause="first submission") for i in (0, 2)
    ]
    said: list[str] = []
    outcome = act(
        actions, bundle, records.load(), records, SlurmScheduler(run=fake), "k",
        now, said.append,
    )  # fmt: skip
    assert outcome.errors == []
    ((argv, _, cwd),) = fake.calls
    assert cwd == bundle.path.resolve(), "SLURM_SUBMIT_DIR is the bundle: members are found"
    assert f"--chdir={bundle.root}" in argv
    assert "--array=0,2%2" in argv
    assert argv[-1] == str((bundle.path / "jobs/arrays/train.sbatch").resolve())
    history = records.load()
    assert [history.latest(f"t_{i}").job_id for i in (0, 2)] == ["500_0", "500_2"]  # type: ignore[union-attr]
    tags = {history.latest(f"t_{i}").tag for i in (0, 2)}  # type: ignore[union-attr]
    (name,) = {argv_word.removeprefix("--job-name=") for argv_word in argv if
               argv_word.startswith("--job-name=")}  # fmt: skip
    assert tags == {f"{name}[0]", f"{name}[2]"}
    assert said == [
        "submitted t_0 attempt 1 as task 500_0 of array train (first submission)",
        "submitted t_2 attempt 1 as task 500_2 of array train (first submission)",
    ]


def test_a_lone_member_or_one_with_excluded_nodes_goes_as_its_own_task(tmp_path: Path) -> None:
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    records.exclude_node("t_1", "bad01")
    fake = FakeRun({"sbatch": ok("600\n")})
    actions = [Submit(f"t_{i}", "restart after FAILED", attempt=2, cause="restart") for i in (0, 1)]
    act(
        actions, bundle, records.load(), records, SlurmScheduler(run=fake), "k",
        now, lambda _: None,
    )  # fmt: skip
    arrays = [next(w for w in argv if w.startswith("--array=")) for argv, _, _ in fake.calls]
    assert sorted(arrays) == ["--array=0", "--array=1"]
    (excluded,) = [argv for argv, _, _ in fake.calls if "--array=1" in argv]
    assert "--exclude=bad01" in excluded


def test_an_array_tasks_extra_log_paths_are_named_by_the_task(tmp_path: Path) -> None:
    """`%A_%a` in a log event's `paths` is the task as SLURM names it (`7_1`): the lines an
    array task writes there are read; for a plain job `%j` and `%A` are its id."""
    bundle = array_bundle(tmp_path)
    job = dataclasses.replace(
        bundle.job("t_1"),
        log_events=({"name": "e", "kind": "substring", "pattern": "X",
                     "paths": ["out/extra-%A_%a.err"], "actions": []},),
    )  # fmt: skip
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "extra-7_1.err").write_text("NCCL WARN on nid9\n")
    read, _ = _read_logs(bundle, job, [(0, "7_1")], LogState())
    assert [line.text for line in read.lines] == ["NCCL WARN on nid9"]
    plain = dataclasses.replace(job, array_group=None, array_index=None)
    (tmp_path / "out" / "extra-8_%a.err").write_text("plain\n")
    read, _ = _read_logs(bundle, plain, [(0, "8")], LogState())
    assert [line.text for line in read.lines] == ["plain"]


def test_a_dry_run_names_each_members_array_task(tmp_path: Path) -> None:
    bundle = array_bundle(tmp_path)
    action = Submit("t_2", "first submission", attempt=1)
    assert action.describe(bundle.job("t_2")) == (
        "t_2: would submit attempt 1 as task 2 of array train: first submission"
    )
    assert action.describe() == "t_2: would submit attempt 1: first submission"


def _submit_members(bundle: Bundle, job_id: str) -> None:
    records = Records(bundle.state_path)
    actions = [Submit(f"t_{i}", "first submission", attempt=1, cause="first submission")
               for i in (0, 1, 2)]  # fmt: skip
    fake = FakeRun({"sbatch": ok(f"{job_id}\n")})
    outcome = act(
        actions, bundle, records.load(), records, SlurmScheduler(run=fake), "k",
        now, lambda _: None,
    )  # fmt: skip
    assert outcome.errors == []


def test_each_member_script_is_kept_by_its_sha256_linked_where_it_can_be(tmp_path: Path) -> None:
    """The copy a task falls back to once a recompile removed its job: a hard link to the
    bundle's file on the same file system (bundles are replaced whole, never written in
    place), holding the bytes its sha256 names."""
    bundle = array_bundle(tmp_path)
    _submit_members(bundle, "500")
    for job in bundle.jobs:
        kept = bundle.state_path / "scripts" / f"{job.sha256}.sbatch"
        script = bundle.script_path(job)
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == job.sha256
        assert os.path.samefile(kept, script), "linked, not copied"
    assert not [p for p in (bundle.state_path / "scripts").iterdir() if p.name.startswith(".")]


def test_where_a_link_is_refused_each_member_script_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another file system than the bundle's (EXDEV), or one without hard links: a copy."""
    bundle = array_bundle(tmp_path)

    real_link = os.link

    def refuse(source: str, target: str) -> None:
        if str(target).endswith(".sbatch"):  # the state dir's records still link
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(source, target)

    monkeypatch.setattr(os, "link", refuse)
    _submit_members(bundle, "500")
    for job in bundle.jobs:
        kept = bundle.state_path / "scripts" / f"{job.sha256}.sbatch"
        assert kept.read_bytes() == bundle.script_path(job).read_bytes()
        assert not os.path.samefile(kept, bundle.script_path(job))
    assert not [p for p in (bundle.state_path / "scripts").iterdir() if p.name.startswith(".")]


def test_a_current_link_left_half_made_by_a_killed_round_is_replaced(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path / "bundle", "b" * 64, "p", "out", "state", (lock_job(),))
    (tmp_path / "out").mkdir()
    # Killed between making the new link under its temporary name and moving it in place.
    os.symlink("elsewhere.log", tmp_path / "out/.current_3.log.100_3")
    point_current_log(bundle, lock_job(), "100_3")
    assert os.readlink(tmp_path / "out/current_3.log") == "slurm-100_3.log"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["current_3.log"]
