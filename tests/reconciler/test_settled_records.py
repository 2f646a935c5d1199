"""Jobs that completed are settled: their folder moves to `<state_dir>/completed/`, which a
round lists but does not read (`Records.load(read_completed=False)`). Whatever is written for
such a job later goes into `jobs/` again, and both folders are read; nothing is lost."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from oellm.reconciler.errors import ReconcileError
from oellm.reconciler.model import History, RetryRequest
from oellm.reconciler.reconcile import _settles
from oellm.reconciler.record_file import RecordExists
from oellm.reconciler.records import Records
from tests.reconciler.test_records import make

AT = "2026-11-26T12:00:00+00:00"


def completed(job: str, attempt: int = 1) -> object:
    return make(
        job,
        attempt,
        phase="finished",
        job_id=str(100 + attempt),
        final_state="COMPLETED",
        exit_code=0,
        ended_at=AT,
    )


def test_a_settled_job_moves_and_a_round_lists_it_without_reading(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(completed("done"))  # type: ignore[arg-type]
    records.save(make("running", phase="submitted", job_id="7"))
    assert records.settle(["done", "never-had-a-folder"]) == ["done"]
    assert not (tmp_path / "jobs" / "done").exists()
    assert (tmp_path / "completed" / "done" / "attempt-0001.json").is_file()

    # A round: the settled job's record is garbage now, and is not read.
    (tmp_path / "completed" / "done" / "attempt-0001.json").write_text("{not json")
    lazy = records.load(read_completed=False)
    assert lazy.settled("done") and not lazy.settled("running")
    assert "done" in lazy.attempts and sorted(lazy.attempts) == ["done", "running"]
    assert [a.job for a in lazy.in_flight()] == ["running"]
    assert lazy.damaged == {}
    # Asked for, it is read from its file (the truth), and its damage shows.
    with pytest.raises(ReconcileError, match="damaged state record"):
        lazy.latest("done")
    # Every other reader reads it.
    assert "done" in records.load().damaged


def test_a_settled_job_reads_the_same_as_before_it_moved(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(make("done", 1, phase="finished", final_state="FAILED", exit_code=1))
    records.save(completed("done", 2))  # type: ignore[arg-type]
    (tmp_path / "jobs" / "done" / "attempt-0002.metrics.json").write_text("{}")
    before = records.load()
    records.settle(["done"])
    assert records.load() == before
    lazy = records.load(read_completed=False)
    assert lazy.attempts["done"] == before.attempts["done"]
    assert records.file_of("done", "attempt-0002.metrics.json").parent.name == "done"
    assert records.file_of("done", "attempt-0002.metrics.json").parent.parent.name == "completed"


def test_a_record_written_after_settling_joins_the_settled_ones(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(completed("job"))  # type: ignore[arg-type]
    records.settle(["job"])
    # `oellm retry` (under the lock) writes into jobs/ again.
    records.request_retry(RetryRequest("job", AT, after=1))
    history = records.load(read_completed=False)
    assert not history.settled("job")  # read, both folders
    assert [a.attempt for a in history.attempts["job"]] == [1]
    assert history.retries["job"].after == 1
    # The retry's attempt completes; settling again merges the folders.
    records.save(completed("job", 2))  # type: ignore[arg-type]
    assert records.settle(["job"]) == ["job"]
    assert not (tmp_path / "jobs" / "job").exists()
    assert sorted(os.listdir(tmp_path / "completed" / "job")) == [
        "attempt-0001.json",
        "attempt-0002.json",
        "retry.json",
    ]
    assert [a.attempt for a in records.load().attempts["job"]] == [1, 2]


def test_a_settle_stopped_half_way_loses_nothing(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(completed("job"))  # type: ignore[arg-type]
    records.settle(["job"])
    records.save(completed("job", 2))  # type: ignore[arg-type]
    records.request_retry(RetryRequest("job", AT, after=1))
    # As if a settle was killed after moving one of the two files over.
    name = "attempt-0002.json"
    os.replace(tmp_path / "jobs" / "job" / name, tmp_path / "completed" / "job" / name)
    history = records.load(read_completed=False)
    assert [a.attempt for a in history.attempts["job"]] == [1, 2]
    assert history.retries["job"].after == 1


def test_a_file_in_both_folders_is_read_from_jobs(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(completed("job"))  # type: ignore[arg-type]
    records.settle(["job"])
    newer = make("job", 1, phase="finished", final_state="FAILED", exit_code=3)
    records.save(newer)
    assert records.load().latest("job") == newer


def test_a_moved_job_takes_its_settled_records_along(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(completed("old"))  # type: ignore[arg-type]
    records.settle(["old"])
    assert records.move("old", "new")
    assert not (tmp_path / "completed" / "old").exists()
    data = json.loads((tmp_path / "jobs" / "new" / "attempt-0001.json").read_text())
    assert data["job"] == "new"
    assert records.load().latest("new") is not None
    # A target that exists as a settled job is never written over.
    records.save(completed("other"))  # type: ignore[arg-type]
    records.settle(["other"])
    assert not records.move("new", "other")


def test_a_folder_moved_while_a_round_reads_it_is_read_where_it_went(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(completed("job"))  # type: ignore[arg-type]
    # Listed in jobs/ by a round, then moved by another (a round that lost its lock).
    os.makedirs(tmp_path / "completed")
    os.rename(tmp_path / "jobs" / "job", tmp_path / "completed" / "job")
    found, _, _ = records._read_job("job", {}, both=False)
    assert [a.attempt for a in found] == [1]
    # Gone from both places: an error for that job, never "no records".
    shutil.rmtree(tmp_path / "completed" / "job")
    with pytest.raises(ReconcileError, match="vanished"):
        records._read_job("job", {}, both=False)


def test_a_new_intent_is_refused_when_the_settled_folder_has_that_attempt(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.save(completed("job"))  # type: ignore[arg-type]
    records.settle(["job"])
    with pytest.raises(RecordExists):
        records.create(make("job", 1))
    assert not (tmp_path / "jobs" / "job" / "attempt-0001.json").exists()


@pytest.mark.parametrize(
    ("fields", "settles"),
    [
        ({}, True),
        ({"finish_requested": "finish event"}, False),  # its recorded state may be another
        ({"final_state": "FAILED", "finish_requested": "finish event"}, False),
        ({"exit_code": 3}, False),
    ],
)
def test_only_a_plain_completion_settles(fields: dict[str, object], settles: bool) -> None:
    record = dataclasses.replace(completed("job"), **fields)  # type: ignore[type-var]
    history = History({"job": (record,)}, {})
    assert _settles("job", history) is settles


@pytest.mark.parametrize("where", ["jobs", "completed"])
def test_a_jobs_excluded_nodes_are_read_from_its_folder_or_its_settled_one(
    tmp_path: Path, where: str
) -> None:
    records = Records(tmp_path)
    assert records.excluded_nodes("a") == [], "no folder at all"
    (tmp_path / where / "a").mkdir(parents=True)
    assert records.excluded_nodes("a") == [], "a folder without the file"
    (tmp_path / where / "a" / "exclude.json").write_text('{"nodes": ["n1", "n2"]}')
    assert records.excluded_nodes("a") == ["n1", "n2"]
    (tmp_path / where / "a" / "exclude.json").write_text('{"nodes": ')
    with pytest.raises(ReconcileError, match="damaged state record"):
        records.excluded_nodes("a")


def test_excluded_nodes_in_jobs_win_over_the_settled_folders(tmp_path: Path) -> None:
    records = Records(tmp_path)
    for where, node in (("jobs", "new"), ("completed", "old")):
        (tmp_path / where / "a").mkdir(parents=True)
        (tmp_path / where / "a" / "exclude.json").write_text(json.dumps({"nodes": [node]}))
    assert records.excluded_nodes("a") == ["new"]


def test_after_a_load_only_jobs_with_a_folder_are_looked_up_for_excluded_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round asks for each job it submits; a job with no folder when the records were
    loaded (its first attempt) costs no lookup, and nothing written since is missed."""
    records = Records(tmp_path)
    for where, job in (("jobs", "live"), ("completed", "settled"), ("jobs", "old")):
        (tmp_path / where / job).mkdir(parents=True)
        (tmp_path / where / job / "exclude.json").write_text(json.dumps({"nodes": [job]}))
    records.load(read_completed=False)
    asked: list[str] = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: asked.append(p.parent.name) or read_bytes(p))
    assert records.excluded_nodes("fresh") == [] and asked == []
    (tmp_path / "jobs" / "fresh").mkdir()  # its intent, written by this round
    assert records.excluded_nodes("fresh") == [] and asked == []
    assert records.excluded_nodes("live") == ["live"]
    assert records.excluded_nodes("settled") == ["settled"]
    assert records.exclude_node("fresh", "n9")
    assert records.excluded_nodes("fresh") == ["n9"], "an exclusion written since is read"
    assert records.move("old", "renamed")
    assert records.excluded_nodes("renamed") == ["old"], "carried over by a move"
    assert Records(tmp_path).excluded_nodes("fresh") == ["n9"], "not loaded: always looked up"
