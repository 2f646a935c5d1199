from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from oellm.reconciler.errors import ReconcileError
from oellm.reconciler.records import Attempt, Dropped, Link, Records


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
    records.drop(Dropped("b", "why", "t"))
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
    with pytest.raises(ReconcileError) as info:
        Records(tmp_path).load()
    assert info.value.path == str(path)
    assert "damaged state record" in info.value.message
    assert path.read_text() == content  # nothing was changed


def test_a_chained_attempt_round_trips_with_its_links(tmp_path: Path) -> None:
    links = (
        Link(1, "oellm.k.a.1", "finished", "t0", job_id="7", state="TIMEOUT"),
        Link(2, "oellm.k.a.1.link2", "submitted", "t1", job_id="8", after="7"),
        Link(3, "oellm.k.a.1.link3", "intent", "t2", after="8"),
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
    with pytest.raises(ReconcileError, match="damaged state record"):
        Records(tmp_path).load()
