"""`codec_quick.loads` (msgspec's typed decode where it is installed) against the strict
reader it stands in for, `decode(kind, json.loads(data))`: on valid records and on thousands of
damaged ones (a field changed, removed or added, at the top or inside a link or an event; the
bytes cut, changed or padded), both return the same record or refuse with the same error."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oellm.reconciler import codec, codec_quick
from oellm.reconciler.codec import RecordInvalid, decode, encode
from oellm.reconciler.codec_quick import loads
from oellm.reconciler.model import Attempt, Dropped, Link, LogState, RetryRequest
from oellm.reconciler.records import Records

msgspec = pytest.importorskip("msgspec")

STAMP = "2026-11-26T12:00:00+00:00"
LINK = Link(link=1, tag="oellm.k.a.1", phase="submitted", intent_at=STAMP, job_id="7")
SAMPLES: list[Any] = [
    Attempt(
        job="a",
        attempt=1,
        tag="oellm.k.a.1",
        bundle_id="b",
        script_sha256="s",
        scheduler="slurm",
        cause="first submission",
        phase="intent",
        intent_at=STAMP,
    ),
    Attempt(
        job="b",
        attempt=3,
        tag="oellm.k.b.3",
        bundle_id="b",
        script_sha256="s",
        scheduler="slurm",
        cause="restart",
        phase="finished",
        intent_at=STAMP,
        job_id="12_3",
        submitted_at="2026-11-26T12:00:01.5+01:00",
        final_state="FAILED",
        exit_code=1,
        ended_at=STAMP,
        reason="NonZeroExitCode",
        unseen=2,
        last_state="RUNNING",
        nodes="vm",
        iteration=400,
        restart_requested="loss spike",
        events=({"key": "spike", "line": 3, "at": STAMP, "values": [1.5, None, {"x": 1}]},),
        chain_repeat=2,
        links=(LINK, dataclasses.replace(LINK, link=2, job_id=None, after="7", phase="intent")),
        upstream_ids=("5", "6"),
    ),
    Dropped(job="a", reason="cancelled", at=STAMP),
    RetryRequest(job="a", at=STAMP, after=1, revives=STAMP),
    LogState(offsets={"out.log": 120}, last_size=4, last_growth=STAMP),
]

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**70,
    1.0,
    1.5,
    -0.0,
    "",
    "x",
    "1",
    "intent",
    "finished",
    "\u0000",
    "\ud800",
    "é",
    STAMP,
    "2026-11-26T12:00:00",  # no time zone
    "2026-11-26T12:00:00Z",
    "2026-11-26",
    "2026-13-26T12:00:00+00:00",
    "yesterday",
    [],
    [1],
    ["a"],
    [{}],
    [{"key": "k"}],
    [[1]],
    {},
    {"a": 1},
    {"a": "x"},
    {"a": True},
    encode(LINK),
    [encode(LINK)],
    [{**encode(LINK), "extra": 1}],
    [{k: v for k, v in encode(LINK).items() if k != "tag"}],
    [{**encode(LINK), "intent_at": "2026-11-26T12:00:00"}],
    [{**encode(LINK), "link": True}],
]
# Texts that json.dumps does not write: numbers spelled otherwise, and what only Python's json
# reads (NaN, Infinity).
RAW_VALUES = [b"1.0", b"1e0", b"1E2", b"-0", b"1e400", b"NaN", b"Infinity", b'"\\ud800"']


def outcome(read: Callable[[], Any]) -> tuple[str, ...]:
    """What a reader made of a record: the record exactly (repr tells 1 from True and 1.0, a
    tuple from a list), or its error's type and message."""
    try:
        found = read()
    except (RecordInvalid, ValueError, TypeError, RecursionError) as exc:
        return ("refused", type(exc).__name__, str(exc))
    return ("read", type(found).__name__, repr(found))


def strict(kind: type[Any], data: bytes) -> Any:
    return decode(kind, json.loads(data))


def paths(data: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a record's JSON: its fields, and the items and fields inside them."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*at, key)
            yield from paths(value, (*at, key))
    elif isinstance(data, list):
        for number, value in enumerate(data):
            yield (*at, number)
            yield from paths(value, (*at, number))


def changed(data: Any, at: tuple[Any, ...], change: Callable[[Any, Any], None]) -> Any:
    copy = json.loads(json.dumps(data))
    holder = copy
    for step in at[:-1]:
        holder = holder[step]
    change(holder, at[-1])
    return copy


def mutations(seed: int, count: int) -> Iterator[tuple[type[Any], bytes]]:
    """Records of each kind, each with one random change: a value replaced, a field removed or
    added (top level or nested), or its bytes damaged."""
    rng = random.Random(seed)
    for _ in range(count):
        sample = rng.choice(SAMPLES)
        kind, data = type(sample), encode(sample)
        places = list(paths(data))
        how = rng.randrange(6)
        if how == 0:  # a value replaced (anywhere)
            value = rng.choice(VALUES)

            def put(holder: Any, key: Any, value: Any = value) -> None:
                holder[key] = value

            yield kind, json.dumps(changed(data, rng.choice(places), put)).encode()
        elif how == 1:  # a field or an item removed
            yield kind, json.dumps(changed(data, rng.choice(places), _remove)).encode()
        elif how == 2:  # an unknown field, at the top or inside an object
            objects = [p for p in places if isinstance(_at(data, p), dict)]
            at = rng.choice([(), *objects])
            extra = {**_at(data, at), rng.choice(["extra", "Job", "job "]): rng.choice(VALUES)}
            yield kind, json.dumps(_set(data, at, extra)).encode()
        elif how == 3:  # a number or a text json.dumps does not write, in place of a value
            key = rng.choice(list(data))
            text = json.dumps({**data, key: "@@"}).encode()
            yield kind, text.replace(b'"@@"', rng.choice(RAW_VALUES))
        elif how == 4:  # the bytes cut, or one of them changed
            text = json.dumps(data, indent=rng.choice([None, 1])).encode()
            spot = rng.randrange(len(text))
            if rng.random() < 0.5:
                yield kind, text[:spot]
            else:
                yield kind, text[:spot] + bytes([rng.randrange(256)]) + text[spot + 1 :]
        else:  # the same record written otherwise: a field twice, a BOM, padding
            text = json.dumps(data).encode()
            key = rng.choice(list(data))
            twice = b"{" + json.dumps({key: rng.choice(VALUES)}).encode()[1:-1] + b", "
            padded = b" \n" + text + b"\n "
            yield kind, rng.choice([twice + text[1:], b"\xef\xbb\xbf" + text, padded])


def _remove(holder: Any, key: Any) -> None:
    del holder[key]


def _at(data: Any, at: tuple[Any, ...]) -> Any:
    for step in at:
        data = data[step]
    return data


def _set(data: Any, at: tuple[Any, ...], value: Any) -> Any:
    if not at:
        return value

    def put(holder: Any, key: Any) -> None:
        holder[key] = value

    return changed(data, at, put)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_a_valid_record_reads_the_same_and_quickly(sample: Any) -> None:
    data = json.dumps(encode(sample), indent=1, sort_keys=True).encode()
    quick = codec_quick._quick(type(sample))
    assert quick is not None, "every record kind has a mirror"
    assert quick(data) == sample
    expected = outcome(lambda: strict(type(sample), data))
    assert outcome(lambda: quick(data)) == expected
    assert outcome(lambda: loads(type(sample), data)) == expected


def test_damaged_records_are_refused_as_the_strict_reader_refuses_them() -> None:
    taken = refused = 0
    for kind, data in mutations(seed=15, count=6000):
        expected = outcome(lambda: strict(kind, data))  # noqa: B023  # called at once
        assert outcome(lambda: loads(kind, data)) == expected, data  # noqa: B023
        quick = codec_quick._quick(kind)
        assert quick is not None
        found = quick(data)
        if found is None:
            refused += 1
        else:
            # The quick reader only ever returns what the strict one returns.
            assert ("read", type(found).__name__, repr(found)) == expected, data
            taken += 1
    # Both sides were exercised: many records taken quickly, many left to the strict reader.
    assert taken > 500 and refused > 2000, (taken, refused)


@pytest.mark.parametrize("depth", [50, 5000])
def test_a_value_nested_deeply_reads_or_fails_as_in_the_strict_reader(depth: int) -> None:
    # msgspec's depth limit is not json's: past it, the strict reader has the last word.
    text = json.dumps(encode(SAMPLES[0]))[:-1] + ', "events": [{"x": ' + "[" * depth
    data = (text + "]" * depth + "}]}").encode()
    assert outcome(lambda: loads(Attempt, data)) == outcome(lambda: strict(Attempt, data))


def test_without_msgspec_the_strict_reader_reads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_quick, "msgspec", None)
    codec_quick._quick.cache_clear()
    try:
        assert codec_quick._quick(Attempt) is None
        for kind, data in mutations(seed=16, count=300):
            expected = outcome(lambda: strict(kind, data))  # noqa: B023
            assert outcome(lambda: loads(kind, data)) == expected  # noqa: B023
    finally:
        codec_quick._quick.cache_clear()


def test_a_record_larger_than_one_read_is_read_whole(tmp_path: Path) -> None:
    events = tuple({"key": f"e{n}", "text": "x" * 200} for n in range(600))  # ~130 KB
    record = dataclasses.replace(SAMPLES[0], events=events)
    records = Records(tmp_path)
    records.save(record)
    assert records.load().attempts["a"] == (record,)


def test_a_folder_in_place_of_a_record_says_it_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "jobs" / "a" / "attempt-0001.json").mkdir(parents=True)
    damaged = Records(tmp_path).load().damaged["a"]
    assert "cannot read the state record: Is a directory" in damaged


def _as_json_writes_it(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


@pytest.mark.parametrize("quick", [True, False], ids=["msgspec", "json"])
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_a_record_is_written_as_sorted_indented_json_and_reads_back(
    sample: Any, quick: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not quick:
        monkeypatch.setattr(codec, "msgspec", None)
    expected = _as_json_writes_it(encode(sample))
    assert codec.dump(sample) == expected  # the dataclass itself
    assert codec.dump(encode(sample)) == expected  # its JSON object
    assert loads(type(sample), codec.dump(sample)) == sample


@pytest.mark.parametrize("quick", [True, False], ids=["msgspec", "json"])
def test_text_beyond_ascii_is_written_as_utf8_and_a_lone_surrogate_escaped(
    quick: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not quick:
        monkeypatch.setattr(codec, "msgspec", None)
    accented = dataclasses.replace(SAMPLES[0], reason="nœud «gpu-7» ☃")
    assert "nœud «gpu-7» ☃".encode() in codec.dump(accented)
    assert loads(Attempt, codec.dump(accented)) == accented
    # A name read from the file system with surrogateescape: UTF-8 cannot hold it as it is.
    odd = dataclasses.replace(SAMPLES[0], reason="node-\udcff")
    written = codec.dump(odd)
    assert b"\\udcff" in written
    assert json.loads(written)["reason"] == "node-\udcff"


def test_a_batch_makes_the_folder_of_a_record_only_where_it_is_missing(tmp_path: Path) -> None:
    records = Records(tmp_path)
    old = [dataclasses.replace(SAMPLES[0], job=f"j{i}") for i in range(40)]
    records.write_batch(old, [])
    # Half rewrite records in existing folders, half are new jobs with no folder yet.
    again = [dataclasses.replace(r, phase="submitted", job_id="9") for r in old[:20]]
    new = [dataclasses.replace(SAMPLES[0], job=f"n{i}") for i in range(20)]
    records.write_batch([*again, *new], [])
    history = records.load().read()
    assert [history[r.job][-1] for r in again] == again
    assert [history[r.job][-1] for r in new] == new
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "no temp file left"


@pytest.mark.parametrize("odd", [float("nan"), float("inf"), -float("inf")])
def test_a_float_that_is_not_finite_is_written_as_json_writes_it(odd: float) -> None:
    """A NaN loss read by a log event, or a metric: msgspec would write `null`, which reads
    back as no value at all; json writes `NaN` / `Infinity`, which json reads back."""
    event = {"key": "spike", "line": 3, "at": STAMP, "values": [1.5, odd]}
    record = dataclasses.replace(SAMPLES[0], events=(event,))
    written = codec.dump(record)
    assert written == _as_json_writes_it(encode(record))
    (back,) = loads(Attempt, written).events
    assert repr(back["values"][1]) == repr(odd)
    metrics = {"job": "a", "loss": odd, "nested": {"deep": [odd]}}
    assert codec.dump(metrics) == _as_json_writes_it(metrics)
