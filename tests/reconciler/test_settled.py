"""The settled index (reconciler/settled.py): settled jobs are read from one file, a missing or
damaged one is rebuilt from the records, and the records win wherever the two disagree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oellm.reconciler import settled
from oellm.reconciler.model import Attempt, Dropped, History
from oellm.reconciler.records import RecordExists, Records
from tests.helpers import write
from tests.reconciler.local_cli import Cli, cli
from tests.reconciler.test_records import make

__all__ = ["cli"]

STAMP = "2026-11-26T12:00:00+00:00"


def finished(job: str, attempt: int = 1, state: str = "COMPLETED") -> Attempt:
    return make(job, attempt, phase="finished", job_id=str(100 + attempt), final_state=state)


def seeded(state: Path) -> Records:
    """Two finished jobs, one in flight, one dropped before it was submitted; sealed."""
    records = Records(state)
    records.save(finished("done"))
    records.save(finished("failed", state="FAILED"))
    records.save(make("running", phase="submitted", job_id="7"))
    records.drop(Dropped("never", "cancelled by the user", STAMP))
    records.load()
    records.seal()
    return records


def reads(records: Records, monkeypatch: pytest.MonkeyPatch) -> tuple[History, list[str]]:
    """A load, and the jobs whose record files it read."""
    read: list[str] = []
    real = Records._read_job

    def counted(self: Records, job: str) -> object:
        read.append(job)
        return real(self, job)

    monkeypatch.setattr(Records, "_read_job", counted)
    history = records.load()
    monkeypatch.setattr(Records, "_read_job", real)
    return history, read


def from_records(state: Path) -> History:
    """The history read from the record files alone (no index)."""
    (state / settled.INDEX_NAME).unlink(missing_ok=True)
    return Records(state).load()


def test_settled_jobs_are_read_from_the_index_and_only_jobs_in_flight_from_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(tmp_path)
    index = json.loads((tmp_path / settled.INDEX_NAME).read_text().splitlines()[1])
    assert sorted(index) == ["done", "failed", "never"]
    history, read = reads(Records(tmp_path), monkeypatch)
    assert read == ["running"]
    assert history == from_records(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: "",
        lambda text: "{not json\n",
        lambda text: text.replace('"COMPLETED"', '"FAILED"'),  # checksum no longer matches
        lambda text: text.replace('"version": 1', '"version": 99'),
        lambda text: text.splitlines()[0] + "\n",  # a header without its jobs
    ],
)
def test_a_damaged_or_missing_index_is_rebuilt_from_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: object
) -> None:
    seeded(tmp_path)
    path = tmp_path / settled.INDEX_NAME
    assert callable(damage)
    path.write_text(damage(path.read_text()))
    records = Records(tmp_path)
    history, read = reads(records, monkeypatch)
    assert sorted(read) == ["done", "failed", "never", "running"]
    assert history.latest("done") == finished("done")
    assert history.latest("failed") == finished("failed", state="FAILED")
    records.seal()
    _, read = reads(Records(tmp_path), monkeypatch)
    assert read == ["running"], "the rebuilt index is trusted again"
    path.unlink()
    history, read = reads(Records(tmp_path), monkeypatch)
    assert len(read) == 4 and history == from_records(tmp_path)


def test_a_write_to_an_indexed_job_names_it_dirty_before_the_record_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = seeded(tmp_path)
    records.load()
    records.save(make("failed", 2, phase="intent"))
    assert settled.read_dirty(tmp_path) == {"failed"}
    # A round killed here, before it wrote the index again: the next reads the job's files.
    history, read = reads(Records(tmp_path), monkeypatch)
    assert read == ["failed", "running"]
    assert [a.attempt for a in history.attempts["failed"]] == [1, 2]
    fresh = Records(tmp_path)
    fresh.load()
    fresh.seal()
    assert not (tmp_path / settled.DIRTY_NAME).exists()
    index = json.loads((tmp_path / settled.INDEX_NAME).read_text().splitlines()[1])
    assert "failed" not in index, "attempt 2 is in flight: the job is not settled"


def test_records_win_over_a_stale_index_and_no_attempt_is_created_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(tmp_path)
    # A writer that does not know the index (an older oellm) starts attempt 2 of `failed`.
    path = tmp_path / "jobs" / "failed" / "attempt-0002.json"
    path.write_text(json.dumps(make("failed", 2, phase="submitted", job_id="9").__dict__))
    records = Records(tmp_path)
    stale = records.load()
    assert [a.attempt for a in stale.attempts["failed"]] == [1], "the index does not know it"
    # A round that decides on the stale view and submits attempt 2 cannot create it...
    with pytest.raises(RecordExists):
        records.create(make("failed", 2))
    assert json.loads(path.read_text())["job_id"] == "9"
    # ...and from then on the records are read: attempt 2 is followed, not submitted again.
    records.seal()
    history, read = reads(Records(tmp_path), monkeypatch)
    assert "failed" in read
    assert [a.job_id for a in history.attempts["failed"]] == ["101", "9"]


def test_an_indexed_job_whose_records_are_gone_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(tmp_path)
    for name in ("attempt-0001.json",):
        (tmp_path / "jobs" / "done" / name).unlink()
    (tmp_path / "jobs" / "done").rmdir()
    records = Records(tmp_path)
    history = records.load()
    assert "done" not in history.attempts, "the records say it never ran: they win"
    records.seal()
    index = json.loads((tmp_path / settled.INDEX_NAME).read_text().splitlines()[1])
    assert "done" not in index


def test_a_job_finishing_enters_the_index_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = seeded(tmp_path)
    path = tmp_path / settled.INDEX_NAME
    before = path.stat().st_mtime_ns, path.stat().st_ino
    records.load()
    records.seal()  # a round that changed nothing writes nothing
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
    records.load()
    records.save(make("running", phase="finished", job_id="7", final_state="COMPLETED"))
    records.seal()  # the round that recorded the end puts the job in the index
    index = json.loads(path.read_text().splitlines()[1])
    assert [a["job_id"] for a in index["running"]["attempts"]] == ["7"]
    written = path.stat().st_mtime_ns, path.stat().st_ino
    for _ in range(2):
        history, read = reads(records, monkeypatch)
        records.seal()
        assert read == [] and history.latest("running") == make(
            "running", phase="finished", job_id="7", final_state="COMPLETED"
        )
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == written


def test_a_retry_request_takes_a_job_out_of_the_index(tmp_path: Path) -> None:
    from oellm.reconciler.model import RetryRequest

    records = seeded(tmp_path)
    records.load()
    records.request_retry(RetryRequest("failed", STAMP, 1))
    records.seal()
    history = Records(tmp_path).load()
    assert history.retries["failed"].after == 1
    index = json.loads((tmp_path / settled.INDEX_NAME).read_text().splitlines()[1])
    assert "failed" not in index


def test_a_batch_of_records_is_written_whole(tmp_path: Path) -> None:
    records = seeded(tmp_path)
    records.load()
    drops = [Dropped(f"j{i}", "cancelled by the user", STAMP) for i in range(50)]
    request = make("running", phase="submitted", job_id="7", cancel_requested="by the user")
    records.write_batch([request], drops)
    history = Records(tmp_path).load()
    assert sorted(history.dropped) == sorted([*(f"j{i}" for i in range(50)), "never"])
    assert history.latest("running") == request
    leftovers = [p for p in (tmp_path / "jobs").rglob(".*")]
    assert leftovers == []


def test_rounds_write_the_index_when_a_job_settles_and_not_after(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "e.yaml", 'project: {name: st}\nbackend: {bash: {command: "true"}}\n')
    assert cli("compile", "e.yaml", "-o", "b")[0] == 0
    cli.until("b", {"COMPLETED"})
    index = tmp_path / "out" / ".oellm" / "st" / settled.INDEX_NAME
    written = index.stat().st_mtime_ns, index.stat().st_ino
    entry = json.loads(index.read_text().splitlines()[1])["st"]
    assert [a["final_state"] for a in entry["attempts"]] == ["COMPLETED"]
    read: list[str] = []
    real = Records._read_job
    monkeypatch.setattr(Records, "_read_job", lambda self, job: read.append(job) or real(self, job))
    for _ in range(2):
        assert cli("reconcile", "b") == (0, "", "")
    assert read == [], "a settled job's records are not read again"
    assert (index.stat().st_mtime_ns, index.stat().st_ino) == written
