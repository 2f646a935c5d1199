"""`oellm cancel` of many jobs writes one record for all of them: a drop of the jobs never
submitted (`<state_dir>/drops/`), a cancel request of the attempts in flight
(`<state_dir>/cancels/`); each reads as the job's or attempt's own."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from oellm.reconciler.errors import ReconcileError
from oellm.reconciler.identity import has_records
from oellm.reconciler.model import Attempt, Dropped, RetryRequest
from oellm.reconciler.records import BATCH_MIN, Records
from oellm.reconciler.retry import revived
from tests.reconciler.test_records import make

AT = "2026-11-30T06:00:00+00:00"
LATER = "2026-11-30T07:00:00+00:00"


def drops(n: int, at: str = AT) -> list[Dropped]:
    return [Dropped(f"j{i}", "cancelled by the user", at) for i in range(n)]


def test_many_drops_are_one_file_and_read_as_each_jobs_drop(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.write_batch([], drops(BATCH_MIN + 3))
    assert len(os.listdir(tmp_path / "drops")) == 1
    assert not (tmp_path / "jobs").exists()  # no folder per job
    history = records.load()
    assert sorted(history.dropped) == sorted(f"j{i}" for i in range(BATCH_MIN + 3))
    assert history.dropped["j0"] == Dropped("j0", "cancelled by the user", AT)
    assert has_records(tmp_path)


def test_few_drops_stay_one_file_per_job(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.write_batch([], drops(3))
    assert not (tmp_path / "drops").exists()
    assert (tmp_path / "jobs" / "j2" / "dropped.json").is_file()
    assert sorted(records.load().dropped) == ["j0", "j1", "j2"]


def test_the_later_of_a_batch_and_a_jobs_own_drop_counts(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.write_batch([], drops(BATCH_MIN))
    records.drop(Dropped("j1", "cancel condition holds", LATER))
    history = records.load()
    assert history.dropped["j1"].reason == "cancel condition holds"
    assert history.dropped["j5"].at == AT
    latest = "2026-11-30T08:00:00+00:00"
    records.write_batch([], drops(BATCH_MIN, at=latest))
    history = records.load()
    assert history.dropped["j1"] == Dropped("j1", "cancelled by the user", latest)
    assert len(os.listdir(tmp_path / "drops")) == 2


def test_a_retry_undoes_a_batch_drop_for_its_job_only(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.write_batch([], drops(BATCH_MIN))
    records.request_retry(RetryRequest("j3", LATER, after=0, revives=AT))
    history = revived(records.load())
    assert "j3" not in history.dropped and "j4" in history.dropped


BROKEN = ["{not json", '{"at": "x", "reason": "r"}', '{"at": "x", "reason": "r", "jobs": [1]}']


@pytest.mark.parametrize("content", BROKEN)
def test_a_damaged_batch_stops_the_round_naming_its_file(tmp_path: Path, content: str) -> None:
    records = Records(tmp_path)
    (tmp_path / "drops").mkdir()
    (tmp_path / "drops" / "1-x.json").write_text(content)
    with pytest.raises(ReconcileError) as caught:
        records.load()
    assert "1-x.json" in caught.value.render()
    assert "damaged drop record" in caught.value.render()


def test_a_renamed_job_keeps_its_batch_drop(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.write_batch([], drops(BATCH_MIN))
    assert records.move("j7", "renamed")
    history = records.load()
    assert history.dropped["renamed"] == Dropped("renamed", "cancelled by the user", AT)


def in_flight(job: str, attempt: int = 1) -> Attempt:
    return make(job, attempt, phase="submitted", job_id=f"7_{attempt}", submitted_at=AT)


def test_many_cancels_are_one_record_that_reads_as_each_attempts(tmp_path: Path) -> None:
    records = Records(tmp_path)
    attempts = [in_flight(f"t{i}") for i in range(BATCH_MIN)]
    asked = in_flight("asked", 2)
    records.save(dataclasses.replace(asked, cancel_requested="restart requested earlier"))
    for attempt in attempts:
        records.save(attempt)
    before = {p: p.read_bytes() for p in (tmp_path / "jobs").glob("*/*.json")}
    records.request_cancels([*attempts, asked], "cancelled by the user", LATER)
    # One file; no attempt record was rewritten.
    assert len(os.listdir(tmp_path / "cancels")) == 1
    assert {p: p.read_bytes() for p in (tmp_path / "jobs").glob("*/*.json")} == before
    history = records.load()
    assert history.latest("t0") == dataclasses.replace(
        attempts[0], cancel_requested="cancelled by the user"
    )
    # A request the record holds already stands.
    assert history.latest("asked").cancel_requested == "restart requested earlier"  # type: ignore[union-attr]
    # A later attempt of the same job is not cancelled by it.
    records.save(in_flight("t1", 2))
    assert records.load().latest("t1").cancel_requested is None  # type: ignore[union-attr]
    # A round that records the attempt's end keeps the request in the record itself.
    ended = dataclasses.replace(history.latest("t2"), phase="finished", final_state="CANCELLED")  # type: ignore[arg-type]
    records.save(ended)
    data = json.loads((tmp_path / "jobs" / "t2" / "attempt-0001.json").read_text())
    assert data["cancel_requested"] == "cancelled by the user"
    # Renamed, the job keeps its request.
    assert records.move("t3", "t3_renamed")
    assert records.load().latest("t3_renamed").cancel_requested == "cancelled by the user"  # type: ignore[union-attr]


def test_few_cancels_are_written_on_each_attempt(tmp_path: Path) -> None:
    records = Records(tmp_path)
    attempt = in_flight("one")
    records.save(attempt)
    records.request_cancels([attempt], "cancelled by the user", LATER)
    assert not (tmp_path / "cancels").exists()
    data = json.loads((tmp_path / "jobs" / "one" / "attempt-0001.json").read_text())
    assert data["cancel_requested"] == "cancelled by the user"


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        '{"at": "x", "reason": "r"}',
        '{"at": "x", "reason": "r", "attempts": [{"job": "a", "attempt": "1"}]}',
    ],
)
def test_a_damaged_cancel_batch_stops_the_round_naming_its_file(
    tmp_path: Path, content: str
) -> None:
    records = Records(tmp_path)
    (tmp_path / "cancels").mkdir()
    (tmp_path / "cancels" / "1-x.json").write_text(content)
    with pytest.raises(ReconcileError, match="damaged cancel record") as caught:
        records.load()
    assert "1-x.json" in caught.value.render()


def test_a_batch_cancel_is_for_that_attempt_not_a_later_one_of_the_same_name(
    tmp_path: Path,
) -> None:
    records = Records(tmp_path)
    attempts = [in_flight(f"n{i}") for i in range(BATCH_MIN)]
    for attempt in attempts:
        records.save(attempt)
    records.request_cancels(attempts, "cancelled by the user", LATER)
    # n0 is renamed away, and a new job takes the name n0 (attempt 1 again, a new intent).
    assert records.move("n0", "n0_old")
    fresh = dataclasses.replace(in_flight("n0"), intent_at=LATER)
    records.save(fresh)
    history = records.load()
    assert history.latest("n0") == fresh
    assert history.latest("n0_old").cancel_requested == "cancelled by the user"  # type: ignore[union-attr]


def test_a_renamed_job_leaves_its_old_name_free_of_the_batch_drop(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.write_batch([], drops(BATCH_MIN))
    assert records.move("j0", "k0")
    history = records.load()
    assert "j0" not in history.dropped and "k0" in history.dropped
    assert sorted(history.dropped) == sorted([f"j{i}" for i in range(1, BATCH_MIN)] + ["k0"])
    assert len(os.listdir(tmp_path / "drops")) == 1
    # Applied once: a second round's move of the same pair does nothing.
    assert not records.move("j0", "k0")
    assert not (tmp_path / "jobs" / "j0").exists()
