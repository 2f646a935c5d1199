"""The compiled lockfile reader: it gives exactly the lock the strict reader gives, and
`loads` trusts it only with bytes the strict reader accepted before and both agreed on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from oellm.lockfile import Lock, codec, fastread
from oellm.lockfile.codec import LockfileError, loads
from oellm.lockfile.writer import dumps
from tests.helpers import EXAMPLES, compile_file

EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yaml"))
FIXTURES = sorted((Path(__file__).parents[1] / "reconciler" / "lockfiles").glob("*/plan.lock.json"))


class Memory:
    """`codec.Proven` in memory, counting what it is asked."""

    def __init__(self) -> None:
        self.digests: set[str] = set()
        self.asked = 0
        self.remembered = 0

    def known(self, digest: str, state_dir: str) -> bool:
        self.asked += 1
        return digest in self.digests

    def keeps(self, state_dir: str) -> bool:
        return True

    def remember(self, digest: str, state_dir: str) -> None:
        self.remembered += 1
        self.digests.add(digest)


def _fast(data: bytes) -> Lock | None:
    return codec._fast(data, "x")


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_every_example_reads_the_same_both_ways(path: Path) -> None:
    written = compile_file(path, env={}).files["plan.lock.json"]
    fast = _fast(written)
    assert fast is not None
    assert repr(fast) == repr(loads(written, "x"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.parent.name)
def test_lockfiles_of_earlier_versions_read_the_same_both_ways(path: Path) -> None:
    """Written before some fields existed: the defaults both readers fill in are the same."""
    data = path.read_bytes()
    fast = _fast(data)
    assert fast is not None
    assert repr(fast) == repr(loads(data, "x"))


def test_array_members_get_their_groups_throttle_and_shared_policies() -> None:
    bundle = compile_file(
        EXAMPLES / "demo.yaml", overrides=["slurm.array=true", "+slurm.array_throttle=2"]
    )
    data = dumps(bundle.lock)
    fast = _fast(data)
    assert fast is not None and repr(fast) == repr(loads(data, "x"))
    assert {j.array_throttle for j in fast.jobs} == {2}
    assert len({id(j.restart) for j in fast.jobs}) == 1


def test_values_of_every_json_type_and_restart_policies_keep_their_types() -> None:
    lock = compile_file(EXAMPLES / "demo.yaml", env={}).lock
    base = lock.jobs[0]
    values: list[object] = [1, 1.0, -0.0, True, None, "ünï ✓", [1, [2.5]], {"b": {}}, 2**70]
    policies = [{"backoff_seconds": 0}, {"backoff_seconds": 0.0}, {}, {"on": []}]
    jobs = tuple(
        dataclasses.replace(
            base,
            name=f"j{n}",
            params={"p": value},
            restart=codec.RestartPolicy.from_json(policies[n % len(policies)]),
        )
        for n, value in enumerate(values)
    )
    data = dumps(dataclasses.replace(lock, jobs=jobs))
    fast = _fast(data)
    assert fast is not None
    assert repr(fast) == repr(loads(data, "x"))
    assert [type(j.params["p"]) for j in fast.jobs] == [type(v) for v in values]
    assert [j.restart.to_json() for j in fast.jobs] == [
        policies[n % len(policies)] for n in range(len(values))
    ]


def test_the_strict_reader_alone_reads_what_the_compiled_one_refuses() -> None:
    """`Infinity` is no JSON to msgspec; `json` reads it, so the strict reader decides."""
    lock = compile_file(EXAMPLES / "demo.yaml", env={}).lock
    job = dataclasses.replace(lock.jobs[0], params={"p": float("inf")})
    data = dumps(dataclasses.replace(lock, jobs=(job,)))
    assert _fast(data) is None
    memory = Memory()
    for _ in range(2):
        assert loads(data, "x", memory).jobs[0].params == {"p": float("inf")}
    assert memory.remembered == 0


def test_bytes_read_strictly_once_are_read_by_the_compiled_reader_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = compile_file(EXAMPLES / "sweeps" / "multistage.yaml", env={}).files["plan.lock.json"]
    memory = Memory()
    first = loads(data, "x", memory)
    assert memory.remembered == 1

    def no_strict_read(data: bytes | str, where: str) -> Lock:
        raise AssertionError("read strictly again")

    monkeypatch.setattr(codec, "_strict", no_strict_read)
    again = loads(data, "x", memory)
    assert repr(again) == repr(first)
    assert memory.remembered == 1


def test_changed_bytes_are_read_strictly_and_refused_when_off_the_schema() -> None:
    data = compile_file(EXAMPLES / "demo.yaml", env={}).files["plan.lock.json"]
    memory = Memory()
    loads(data, "x", memory)
    document = json.loads(data)
    document["jobs"][0]["surprise"] = 1  # the compiled reader ignores unknown fields
    edited = json.dumps(document).encode()
    assert _fast(edited) is not None
    with pytest.raises(LockfileError, match="breaks its schema"):
        loads(edited, "x", memory)
    document["jobs"][0].pop("surprise")
    document["jobs"][0]["chain_repeat"] = 0  # well typed, off the schema
    edited = json.dumps(document).encode()
    with pytest.raises(LockfileError, match=r"chain_repeat|minimum"):
        loads(edited, "x", memory)
    assert memory.remembered == 1


def test_another_oellm_or_schema_reads_the_bytes_strictly_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = compile_file(EXAMPLES / "demo.yaml", env={}).files["plan.lock.json"]
    memory = Memory()
    loads(data, "x", memory)
    monkeypatch.setattr(codec, "_judge", lambda: b"another schema")
    loads(data, "x", memory)
    assert memory.remembered == 2


def test_readers_that_disagree_are_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    data = compile_file(EXAMPLES / "demo.yaml", env={}).files["plan.lock.json"]
    decode = fastread.decode

    def off_by_one(data: bytes) -> object:
        found = decode(data)
        assert found is not None
        head, jobs = found
        jobs[0] = dataclasses.replace(jobs[0], index=jobs[0].index + 1)
        return head, jobs

    monkeypatch.setattr(fastread, "decode", off_by_one)
    memory = Memory()
    for _ in range(2):
        assert loads(data, "x", memory) == loads(data, "x")
    assert memory.remembered == 0


def test_without_msgspec_every_read_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastread, "msgspec", None)
    data = compile_file(EXAMPLES / "demo.yaml", env={}).files["plan.lock.json"]
    memory = Memory()
    assert loads(data, "x", memory) == loads(data, "x")
    assert memory.asked == memory.remembered == 0


def test_a_remembered_digest_of_damaged_bytes_still_gives_a_clear_error() -> None:
    """Bytes the compiled reader refuses are read strictly even with their digest known."""
    memory = Memory()
    for damaged in (b"{", b'{"jobs": 5}', b'{"jobs": [{"restart": 3}]}', b"[]"):
        memory.digests.add(codec._reader_digest(damaged))
        with pytest.raises(LockfileError):
            loads(damaged, "x", memory)


def test_a_job_in_an_undescribed_array_is_refused_by_the_strict_reader() -> None:
    bundle = compile_file(EXAMPLES / "demo.yaml", overrides=["slurm.array=true"])
    document = json.loads(dumps(bundle.lock))
    document["arrays"] = {}
    data = json.dumps(document).encode()
    assert _fast(data) is None
    with pytest.raises(LockfileError, match=r"does not describe|schema"):
        loads(data, "x", Memory())


def _damaged(document: dict[str, object], path: tuple[object, ...], value: object) -> bytes:
    place: object = document
    for step in path[:-1]:
        place = place[step]  # type: ignore[index]
    place[path[-1]] = value  # type: ignore[index]
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("project", "state_dir"), 5),
        (("project", "state_dir"), None),
        (("project", "state_dir"), ["a"]),
        (("project", "name"), {"a": 1}),
        (("moved",), "x"),
        (("moved",), [["a", "b"]]),
        (("arrays",), "x"),
        (("jobs", 0, "backend"), 3),
        (("jobs", 0, "restart"), "x"),
    ],
)
def test_damaged_bytes_read_with_a_digest_store_are_the_strict_readers_error(
    tmp_path: Path, path: tuple[object, ...], value: object
) -> None:
    """Read before any strict read checked them (to find where their digest is kept), wrong
    bytes never crash: the strict reader says what is wrong."""
    from oellm.reconciler.bundle import _LastRead

    data = compile_file(EXAMPLES / "demo.yaml", env={}).files["plan.lock.json"]
    damaged = _damaged(json.loads(data), path, value)
    with pytest.raises(LockfileError) as strict:
        loads(damaged, "x")
    with pytest.raises(LockfileError) as proven:
        loads(damaged, "x", _LastRead(tmp_path / "b"))
    assert proven.value.message == strict.value.message


def test_bytes_that_are_not_utf_8_in_a_skipped_value_are_the_strict_readers_error(
    tmp_path: Path,
) -> None:
    from oellm.reconciler.bundle import _LastRead

    data = compile_file(EXAMPLES / "demo.yaml", env={}).files["plan.lock.json"]
    latin_1 = b'"restart": {"note": "m\xfcller",'  # an edit saved as Latin-1
    damaged = data.replace(b'"restart": {', latin_1, 1)
    assert damaged != data
    with pytest.raises(LockfileError, match="cannot read the lockfile"):
        loads(damaged, "x", _LastRead(tmp_path / "b"))


def test_random_damage_gives_the_strict_readers_lock_or_its_error(tmp_path: Path) -> None:
    """Seeded: values swapped for values of other types, keys removed, at every depth."""
    import random

    from oellm.reconciler.bundle import _LastRead

    data = compile_file(EXAMPLES / "sweeps" / "multistage.yaml", env={}).files["plan.lock.json"]
    rng = random.Random(15)
    others: list[object] = [None, 0, -1, 1.5, "", "x", True, [], {}, ["a"], {"a": 1}, 2**70]
    proven = _LastRead(tmp_path / "b")
    for _ in range(300):
        document = json.loads(data)
        place: object = document
        steps: list[object] = []
        while isinstance(place, (dict, list)) and place and rng.random() < 0.7:
            step = rng.choice(list(place) if isinstance(place, dict) else range(len(place)))
            steps.append(step)
            place = place[step]  # type: ignore[index]
        if not steps:
            continue
        parent: object = document
        for step in steps[:-1]:
            parent = parent[step]  # type: ignore[index]
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[steps[-1]]
        else:
            parent[steps[-1]] = rng.choice(others)  # type: ignore[index]
        damaged = json.dumps(document).encode()
        try:
            expected: object = repr(loads(damaged, "x"))
        except LockfileError as error:
            expected = error.message
        try:
            found: object = repr(loads(damaged, "x", proven))
        except LockfileError as error:
            found = error.message
        assert found == expected, steps


def test_the_digest_follows_the_readers_source_and_msgspecs_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A build that changes a reader, or another msgspec, reads strictly again."""
    import msgspec

    data = b"{}"
    first = codec._reader_digest(data)
    codec._judge.cache_clear()
    monkeypatch.setattr(msgspec, "__version__", "0.0.0")
    assert codec._reader_digest(data) != first
    monkeypatch.undo()
    codec._judge.cache_clear()
    assert codec._reader_digest(data) == first
    source = Path(fastread.__file__).read_bytes()
    real = Path.read_bytes

    def changed(path: Path) -> bytes:
        return source + b"#" if str(path) == fastread.__file__ else real(path)

    monkeypatch.setattr(Path, "read_bytes", changed)
    codec._judge.cache_clear()
    assert codec._reader_digest(data) != first
    monkeypatch.undo()
    codec._judge.cache_clear()


def test_a_read_that_cannot_keep_a_digest_is_the_strict_read_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No state dir yet (`oellm cancel` of a bundle never reconciled): the compiled reader is
    not run at all, only the state dir is read ahead."""
    data = compile_file(EXAMPLES / "demo.yaml", env={}).files["plan.lock.json"]
    memory = Memory()
    memory.keeps = lambda state_dir: False  # type: ignore[method-assign]

    def no_fast_read(data: bytes, where: str) -> Lock:
        raise AssertionError("read by the compiled reader")

    monkeypatch.setattr(codec, "_fast", no_fast_read)
    assert loads(data, "x", memory) == loads(data, "x")
    assert memory.asked == 1 and memory.remembered == 0
