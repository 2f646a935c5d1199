"""A round writes the changes it records in attempts together: from `BATCH_MIN` records on with
two file system syncs rather than an fsync each (the attempts it recovers from SLURM with one),
and all of them before it cancels anything; a few records are still fsynced one by one."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from oellm import filesync
from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.write import write_bundle
from oellm.reconciler.act import act
from oellm.reconciler.actions import Action, Cancel, Fired, Recover, StateSeen
from oellm.reconciler.bundle import Bundle, load_bundle
from oellm.reconciler.model import Attempt, Observation
from oellm.reconciler.record_file import RecordExists
from oellm.reconciler.records import BATCH_MIN, Records
from oellm.reconciler.schedulers.slurm import SlurmScheduler
from oellm.shell import Completed
from tests.helpers import write
from tests.reconciler.fakes import FakeRun, ok
from tests.reconciler.test_arrays import array_bundle


def now() -> datetime:
    return datetime.now().astimezone()


def in_flight(records: Records, count: int, names: Sequence[str] = (), first_id: int = 600) -> None:
    """Attempt 1 of `count` jobs (`s_<i>`, or `names`) submitted as job ids from `first_id`."""
    stamp = now().isoformat()
    for i, job in enumerate(names or [f"s_{i}" for i in range(count)]):
        records.save(
            Attempt(
                job=job,
                attempt=1,
                tag=f"oellm.k.{job}.1",
                bundle_id="b",
                script_sha256="0" * 64,
                scheduler="slurm",
                cause="first submission",
                phase="submitted",
                intent_at=stamp,
                job_id=str(first_id + i),
                submitted_at=stamp,
            )
        )


class Syncs:
    """Counts the syncs of the state dir's file system and the fsyncs of single files."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sync = 0
        self.fsync = 0
        self.folders: set[Path] = set()
        real_sync, real_fsync = filesync.sync_file_system, os.fsync

        def sync(folder: Path) -> None:
            self.sync += 1
            self.folders.add(folder)
            real_sync(folder)

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        monkeypatch.setattr(filesync, "sync_file_system", sync)
        monkeypatch.setattr(os, "fsync", fsync)


class OnDiskAtCancel(FakeRun):
    """scancel, answered once it has read every record's last state from disk."""

    def __init__(self, records: Records) -> None:
        super().__init__({"scancel": ok()})
        self.records = records
        self.states: dict[str, str | None] = {}

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        fresh = Records(self.records.state_dir).load()
        self.states = {job: a[-1].last_state for job, a in fresh.read().items() if a}
        return super().__call__(argv, timeout, cwd, env)


def round_of(tmp_path: Path, count: int, syncs: Syncs) -> tuple[Records, OnDiskAtCancel]:
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    in_flight(records, count)
    actions: list[Action] = [
        StateSeen(f"s_{i}", "PENDING -> RUNNING", attempt=1, job_id=str(600 + i), state="RUNNING")
        for i in range(count)
    ]
    actions.append(Cancel("s_0", "a condition holds", attempt=1, job_id="600", origin="condition"))
    fake = OnDiskAtCancel(records)
    history = records.load()
    syncs.sync = syncs.fsync = 0  # the round's own, not the setup's
    syncs.folders.clear()
    act(actions, bundle, history, records, SlurmScheduler(run=fake), "k", now, lambda _: None,
        Observation(True, True))  # fmt: skip
    return records, fake


def test_many_states_seen_are_written_with_two_syncs_before_the_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = Syncs(monkeypatch)
    count = BATCH_MIN + 8
    records, fake = round_of(tmp_path, count, syncs)
    assert syncs.fsync == 0 and syncs.sync == 2
    assert syncs.folders == {tmp_path / "state"}  # that file system alone, not the machine's
    assert fake.programs() == ["scancel"]
    assert fake.states == {f"s_{i}": "RUNNING" for i in range(count)}
    read = records.load().read()
    assert {a[-1].last_state for a in read.values()} == {"RUNNING"}
    leftovers = [p for p in (tmp_path / "state").rglob(".*") if p.is_file()]
    assert leftovers == []


def test_a_few_states_seen_are_fsynced_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = Syncs(monkeypatch)
    _, fake = round_of(tmp_path, 3, syncs)
    assert syncs.sync == 0 and syncs.fsync >= 3
    assert fake.states == {f"s_{i}": "RUNNING" for i in range(3)}


def test_records_changed_before_a_failure_in_the_round_are_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    in_flight(records, 2)

    actions: list[Action] = [
        StateSeen("s_0", "PENDING -> RUNNING", attempt=1, job_id="600", state="RUNNING"),
        StateSeen("s_1", "PENDING -> RUNNING", attempt=1, job_id="601", state="RUNNING"),
    ]
    history = records.load()
    from oellm.reconciler import changes

    real = changes._change
    seen: list[str] = []

    def change_then_fail(action: object, record: Attempt, done: object, stamp: str) -> None:
        if seen:
            raise RuntimeError("the round dies here")
        seen.append(record.job)
        real(action, record, done, stamp)  # type: ignore[arg-type]

    monkeypatch.setattr(changes, "_change", change_then_fail)
    with pytest.raises(RuntimeError):
        act(actions, bundle, history, records, SlurmScheduler(run=FakeRun({})), "k", now,
            lambda _: None, Observation(True, True))  # fmt: skip
    states = {job: a[-1].last_state for job, a in records.load().read().items()}
    assert states == {"s_0": "RUNNING", "s_1": None}


def sweep_bundle(tmp_path: Path, count: int) -> Bundle:
    values = ", ".join(str(i) for i in range(count))
    exp = write(
        tmp_path / "exp.yaml",
        "project: {name: rec}\n"
        'job: {name: "r_${vars.i}"}\n'
        "vars: {i: 0}\n"
        'backend: {bash: {command: "echo ${vars.i}"}}\n'
        f"sweep:\n  params: {{vars.i: [{values}]}}\n",
    )
    compiled = compile_bundle(CompileRequest(experiment=exp, env={"OUTPUT_DIR": "out"}))
    write_bundle(compiled, tmp_path / "b")
    return load_bundle(tmp_path / "b")


def recovers(count: int) -> list[Action]:
    return [
        Recover(
            f"r_{i}",
            "found in SLURM",
            attempt=1,
            job_id=str(700 + i),
            found=((1, f"oellm.k.r_{i}.1", str(700 + i), None),),
        )
        for i in range(count)
    ]


def test_many_attempts_recovered_from_slurm_are_created_with_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = BATCH_MIN + 8
    bundle = sweep_bundle(tmp_path, count)
    records = Records(tmp_path / "state")
    syncs = Syncs(monkeypatch)
    said: list[str] = []
    act(recovers(count), bundle, records.load(), records, SlurmScheduler(run=FakeRun({})), "k",
        now, said.append)  # fmt: skip
    assert (syncs.sync, syncs.fsync) == (1, 0)
    read = records.load().read()
    assert {job: (a[-1].job_id, a[-1].phase) for job, a in read.items()} == {
        f"r_{i}": (str(700 + i), "submitted") for i in range(count)
    }
    assert len([line for line in said if line.startswith("recovered ")]) == count


def test_a_recovered_attempt_another_round_wrote_is_left_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its record is not written over, also not by a change the round made to it after; the
    round stops with RecordExists as before, and the other attempts are recorded."""
    count = BATCH_MIN + 1
    bundle = sweep_bundle(tmp_path, count)
    records = Records(tmp_path / "state")
    history = records.load()
    theirs = records.attempt_path("r_3", 1)
    theirs.parent.mkdir(parents=True)
    theirs.write_text("another round's record\n")
    actions = recovers(count)
    actions.append(StateSeen("r_3", "PENDING -> RUNNING", attempt=1, job_id="703", state="RUNNING"))
    with pytest.raises(RecordExists):
        act(actions, bundle, history, records, SlurmScheduler(run=FakeRun({})), "k", now,
            lambda _: None)  # fmt: skip
    assert theirs.read_text() == "another round's record\n"
    made = {p.parent.name for p in (tmp_path / "state" / "jobs").glob("*/attempt-0001.json")}
    assert made == {f"r_{i}" for i in range(count)}


def test_an_events_record_is_on_disk_before_the_next_event_runs_its_hook(tmp_path: Path) -> None:
    """A crash after an event's hook ran repeats at most that one hook, not every one the
    round ran before it."""
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    names = [job.name for job in bundle.jobs][:2]
    in_flight(records, len(names), names, first_id=500)
    first = records.attempt_path(names[0], 1)
    probe = tmp_path / "probe.txt"

    def event(key: str, command: str) -> dict[str, object]:
        name = key.split("@")[0]
        return {"key": key, "event": name, "trigger": "log", "line": "x",
                "actions": [{"kind": "run", "command": command}]}  # fmt: skip

    check = f"if grep -q e1@log:0 {first}; then echo on-disk > {probe}; else echo no > {probe}; fi"
    actions: list[Action] = [
        Fired(names[0], "e1", attempt=1, job_id="500", event=event("e1@log:0", "true")),
        Fired(names[1], "e2", attempt=1, job_id="501", event=event("e2@log:0", check)),
    ]
    act(actions, bundle, records.load(), records, SlurmScheduler(run=FakeRun({})), "k", now,
        lambda _: None, Observation(True, True))  # fmt: skip
    assert probe.read_text().strip() == "on-disk"
    latest = records.load().latest(names[1])
    assert latest is not None and latest.fired("e2@log:0")
