"""`exclude_node` in act: the queued jobs the event names are moved off the node with one
`scontrol update`; when the controller does not answer, nothing of the event is kept and its
log lines are read again, so it fires again next round instead of being lost."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from oellm.reconciler.act import act
from oellm.reconciler.actions import Fired
from oellm.reconciler.bundle import Bundle
from oellm.reconciler.model import Attempt, LogLine, LogRead, Observation
from oellm.reconciler.records import Records
from oellm.reconciler.schedulers.slurm import SlurmScheduler
from tests.reconciler.fakes import FakeRun, ok, recorded
from tests.reconciler.test_arrays import array_bundle

EVENT = {
    "key": "bad@log:0",
    "event": "bad",
    "trigger": "log",
    "line": "bad node bad01",
    "named": {"node": "bad01"},
    "actions": [{"kind": "exclude_node", "node": "{node}"}, {"kind": "restart"}],
}


def now() -> datetime:
    return datetime.now().astimezone()


def running(bundle: Bundle, records: Records) -> None:
    stamp = now().isoformat()
    records.save(
        Attempt(
            job="t_0",
            attempt=1,
            tag="oellm.k.t_0.1",
            bundle_id=bundle.bundle_id,
            script_sha256=bundle.job("t_0").sha256,
            scheduler="slurm",
            cause="first submission",
            phase="submitted",
            intent_at=stamp,
            job_id="500",
            submitted_at=stamp,
        )
    )


def round_with(fake: FakeRun, bundle: Bundle, records: Records) -> list[str]:
    said: list[str] = []
    event = Fired(
        "t_0",
        "event bad: log",
        attempt=1,
        job_id="500",
        event=EVENT,
        job_ids=("501", "500"),
        queued_ids=("501",),
    )
    read = LogRead((LogLine("log", 0, "bad node bad01"),), {"log": 15}, 15)
    obs = Observation(True, True, logs={"t_0": read})
    act([event], bundle, records.load(), records, SlurmScheduler(run=fake), "k", now,
        said.append, obs)  # fmt: skip
    return said


def test_queued_jobs_are_moved_off_the_node_and_the_event_recorded(tmp_path: Path) -> None:
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    running(bundle, records)
    fake = FakeRun({"scontrol": ok(), "scancel": ok()})
    said = round_with(fake, bundle, records)
    assert [argv for argv, _, _ in fake.calls] == [
        ["scontrol", "update", "JobId=501", "ExcNodeList=bad01"],
        ["scancel", "501", "500"],
    ]
    assert "t_0: queued job(s) 501 now avoid bad01" in said
    latest = records.load().latest("t_0")
    assert latest is not None and latest.fired("bad@log:0")
    assert latest.restart_requested
    assert records.excluded_nodes("t_0") == ["bad01"]
    assert records.load_log_state("t_0", 1).offsets == {"log": 15}


def test_controller_down_keeps_nothing_of_the_event_so_it_fires_again(tmp_path: Path) -> None:
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    running(bundle, records)
    fake = FakeRun({"scontrol": recorded("scancel_ctld_down.txt").completed()})
    round_with(fake, bundle, records)
    assert [argv[0] for argv, _, _ in fake.calls] == ["scontrol"], "no cancel without the event"
    latest = records.load().latest("t_0")
    assert latest is not None and not latest.fired("bad@log:0")
    assert not latest.restart_requested
    assert records.load_log_state("t_0", 1).offsets == {}, "the line is read again"
    # Next round the controller answers: the update is made and the event kept.
    fake = FakeRun({"scontrol": ok(), "scancel": ok()})
    round_with(fake, bundle, records)
    assert [argv[0] for argv, _, _ in fake.calls] == ["scontrol", "scancel"]
    latest = records.load().latest("t_0")
    assert latest is not None and latest.fired("bad@log:0")


def test_a_refusal_is_reported_and_the_event_still_kept(tmp_path: Path) -> None:
    bundle = array_bundle(tmp_path)
    records = Records(tmp_path / "state")
    running(bundle, records)
    refused = recorded("scontrol_exclude_running.txt")
    fake = FakeRun({"scontrol": refused.completed(), "scancel": ok()})
    said = round_with(fake, bundle, records)
    assert "t_0: not every queued job could be moved off bad01" in said
    latest = records.load().latest("t_0")
    assert latest is not None and latest.fired("bad@log:0")
