from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.reconciler.codec import decode, encode
from oellm.reconciler.errors import ReconcileError
from oellm.reconciler.model import Attempt, Dropped, Link, LogState
from oellm.reconciler.record_file import RecordExists
from oellm.reconciler.records import BATCH_MIN, Records


def make(job: str = "a", attempt: int = 1, **kw: object) -> Attempt:
    base: dict[str, object] = dict(
        job=job,
        attempt=attempt,
        tag=f"oellm.k.{job}.{attempt}",
        bundle_id="b",
        script_sha256="s",
        scheduler="slurm",
        cause="first submission",
        phase="intent",
        intent_at="2026-11-26T12:00:00+00:00",
    )
    base.update(kw)
    return Attempt(**base)  # type: ignore[arg-type]


def test_round_trip_in_attempt_order(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(make(attempt=2))
    records.save(make(attempt=1, phase="finished", final_state="NOT_SUBMITTED"))
    records.save(make(attempt=10))
    records.drop(Dropped("b", "why", "2026-11-26T12:00:00+00:00"))
    history = records.load()
    assert [a.attempt for a in history.attempts["a"]] == [1, 2, 10]
    assert history.latest("a") == make(attempt=10)
    assert history.dropped["b"].reason == "why"
    assert history.latest("nope") is None


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(make())
    records.save(make(phase="submitted", job_id="7"))
    files = sorted(p.name for p in (tmp_path / "jobs" / "a").iterdir())
    assert files == ["attempt-0001.json"]
    assert json.loads((tmp_path / "jobs/a/attempt-0001.json").read_text())["job_id"] == "7"


@pytest.mark.parametrize("content", ["", "{not json", '{"job": "a"}', "[]"])
def test_damaged_record_is_a_clear_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "jobs" / "a" / "attempt-0001.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    history = Records(tmp_path).load()
    assert "a" not in history.attempts, "a job with a damaged record is left alone"
    assert history.damaged["a"].startswith(f"{path}: damaged state record")
    assert "move it aside" in history.damaged["a"]
    assert path.read_text() == content  # nothing was changed


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("attempt", "1", "attempt must be an integer"),
        ("intent_at", "yesterday", "not an ISO time stamp"),
        ("events", "x", "events must be a list"),
        ("phase", "bogus", "phase is 'bogus'"),
        ("job_id", 123, "job_id must be a string"),
        ("unseen", True, "unseen must be an integer"),
        ("links", [{"link": "1"}], "links[0].link must be an integer"),
        # Values a plain field takes as they are only when their type is exactly its own.
        ("job", None, "job must be a string"),
        ("attempt", 1.0, "attempt must be an integer"),
        ("exit_code", True, "exit_code must be an integer"),
        ("submitted_at", "later", "not an ISO time stamp"),
        ("ended_at", 5, "ended_at must be a string"),
    ],
)
def test_a_record_of_the_wrong_shape_is_damaged(
    tmp_path: Path, field: str, value: object, says: str
) -> None:
    records = Records(tmp_path)
    records.save(make(phase="submitted", job_id="7"))
    records.save(make(job="b"))
    path = records.attempt_path("a", 1)
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    history = records.load()
    assert "a" not in history.attempts and says in history.damaged["a"], history.damaged
    assert str(path) in history.damaged["a"]
    assert history.latest("b") == make(job="b"), "other jobs are read as usual"


def test_a_record_under_another_name_is_damaged(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(make(attempt=2))
    os.rename(records.attempt_path("a", 2), records.attempt_path("a", 3))
    assert "attempt 2, not the job and attempt of its file name" in records.load().damaged["a"]


def test_an_intent_is_never_written_over(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.create(make())
    with pytest.raises(RecordExists):
        records.create(make(cause="another round"))
    assert records.load().latest("a") == make()
    assert sorted(p.name for p in (tmp_path / "jobs" / "a").iterdir()) == ["attempt-0001.json"]


def test_a_chained_attempt_round_trips_with_its_links(tmp_path: Path) -> None:
    links = (
        Link(
            1, "oellm.k.a.1", "finished", "2026-11-26T12:00:00+00:00", job_id="7", state="TIMEOUT"
        ),
        Link(
            2, "oellm.k.a.1.link2", "submitted", "2026-11-26T12:01:00+00:00", job_id="8", after="7"
        ),
        Link(3, "oellm.k.a.1.link3", "intent", "2026-11-26T12:02:00+00:00", after="8"),
    )
    records = Records(tmp_path)
    records.save(make(phase="submitted", job_id="7", chain_repeat=3, links=links))
    loaded = records.load().latest("a")
    assert loaded is not None and loaded.links == links and loaded.chain_repeat == 3
    updated = loaded.with_link(3, phase="submitted", job_id="9")
    assert updated.links[2].job_id == "9" and updated.links[:2] == links[:2]


def test_a_record_written_before_chains_reads_as_a_single_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs" / "a" / "attempt-0001.json"
    path.parent.mkdir(parents=True)
    old = dataclasses.asdict(make(phase="submitted", job_id="7"))
    del old["links"], old["chain_repeat"]
    path.write_text(json.dumps(old))
    loaded = Records(tmp_path).load().latest("a")
    assert loaded is not None and (loaded.links, loaded.chain_repeat) == ((), 1)


@pytest.mark.parametrize("links", [["x"], [{"link": 1}], [{"link": 1, "tag": "t", "bad": 1}]])
def test_damaged_links_are_a_damaged_record(tmp_path: Path, links: list[object]) -> None:
    path = tmp_path / "jobs" / "a" / "attempt-0001.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**dataclasses.asdict(make()), "links": links}))
    assert "damaged state record" in Records(tmp_path).load().damaged["a"]


def test_a_bundle_swapped_while_it_is_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recompile swaps the bundle in at once, but a round may read the lockfile before the
    swap and a script after it: that is not a script edited by hand."""
    from oellm.reconciler import bundle as bundle_module
    from tests.reconciler.slurm_helpers import compile_to

    first = compile_to(tmp_path, 'project: {name: sw}\nbackend: {bash: {command: "echo 1"}}\n')
    second = compile_to(
        tmp_path, 'project: {name: sw}\nbackend: {bash: {command: "echo 2"}}\n', name="next"
    )
    real = bundle_module._check_script
    swapped: list[bool] = []

    def swap_then_check(script: Path, sha256: str) -> None:
        if not swapped:
            # The new bundle lands between the lockfile read and this script's check.
            for name in ("plan.lock.json", "jobs/sw.sbatch"):
                (first / name).write_bytes((second / name).read_bytes())
            swapped.append(True)
        real(script, sha256)

    monkeypatch.setattr(bundle_module, "_check_script", swap_then_check)
    loaded = bundle_module.load_bundle(first)
    assert loaded.jobs[0].sha256 == bundle_module.load_bundle(second).jobs[0].sha256
    # A script really edited after compile is still refused.
    (first / "jobs" / "sw.sbatch").write_text("#!/bin/bash\necho edited\n")
    with pytest.raises(ReconcileError, match="changed after compile"):
        bundle_module.load_bundle(first)


@pytest.mark.parametrize("count", [3, BATCH_MIN + 8])
def test_create_many_never_overwrites_another_rounds_intent(tmp_path: Path, count: int) -> None:
    """One by one below BATCH_MIN, in one batch from it on: the same answers either way."""
    records = Records(tmp_path)
    theirs = make("j1", 1, cause="the other round's")
    records.create(theirs)
    records.save(make("j2", 1, phase="finished", final_state="COMPLETED"))
    records.settle(["j2"])
    mine = [make(f"j{n}", 1) for n in range(count)]
    found = records.create_many(mine)
    assert found[1] == str(records.attempt_path("j1", 1))
    assert found[2] == str(tmp_path / "completed" / "j2" / "attempt-0001.json")
    assert [n for n, f in enumerate(found) if f is None] == [0, *range(3, count)]
    history = records.load()
    assert history.latest("j1") == theirs
    assert history.latest("j2") is not None and history.latest("j2").phase == "finished"
    assert not (tmp_path / "jobs" / "j2").exists()
    for n in (0, *range(3, count)):
        assert history.latest(f"j{n}") == mine[n]
    leftovers = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == [], leftovers


@pytest.mark.parametrize(
    "record",
    [
        make(),
        make(events=({"key": "oom", "line": 3, "done": ["restart"]},), upstream_ids=("7", "8")),
        make(
            chain_repeat=2,
            links=(
                Link(1, "t", "submitted", "2026-11-26T12:00:00+00:00", job_id="5"),
                Link(2, "t.2", "intent", "2026-11-26T12:00:01+00:00", after="5"),
            ),
        ),
        Dropped("a", "cancelled: 'x' \"y\"", "2026-11-26T12:00:00+00:00"),
        LogState({"log": 12, "a b": 0}, 4, "2026-11-26T12:00:00+00:00"),
    ],
)
def test_records_are_written_as_asdict_writes_them(record: object) -> None:
    written = encode(record)
    assert json.dumps(written, sort_keys=True) == json.dumps(
        dataclasses.asdict(record),
        sort_keys=True,  # type: ignore[call-overload]
    )
    assert decode(type(record), json.loads(json.dumps(written))) == record


KILLED_AT_SYNC = """
import os, signal, sys
from pathlib import Path
from oellm.reconciler import records as module
from tests.reconciler.test_records import make
module.filesync.sync_file_system = lambda folder: os.kill(os.getpid(), signal.SIGKILL)
module.Records(Path(sys.argv[1])).create_many([make(f"j{n}") for n in range(int(sys.argv[2]))])
"""


def test_create_many_killed_before_its_sync_leaves_no_temp_files(tmp_path: Path) -> None:
    """A kill gives no `finally` a chance: each temp name is gone once its intent is linked."""
    count = BATCH_MIN + 8
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_SYNC, str(tmp_path), str(count)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(tmp_path.glob("jobs/*/attempt-0001.json"))) == count
    assert [p for p in tmp_path.rglob(".*") if p.is_file()] == []
