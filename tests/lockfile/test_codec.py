"""The one lockfile codec: what the compiler writes, the reconciler reads back as the same
records, and the bytes it writes again are the same bytes; a lockfile off its schema is one
clear error naming the file and the place."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from oellm.lockfile import Lock, LockJob, RestartPolicy
from oellm.lockfile.codec import LockfileError, loads
from oellm.lockfile.writer import bundle_id, dump, dump_sealed, dumps, sealed, to_json
from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.errors import ReconcileError
from tests.helpers import EXAMPLES, compile_file

EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yaml"))
FIXTURES = sorted((Path(__file__).parents[1] / "reconciler" / "lockfiles").glob("*/plan.lock.json"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_every_example_round_trips(path: Path) -> None:
    bundle = compile_file(path, env={})
    written = bundle.files["plan.lock.json"]
    assert dumps(bundle.lock) == written  # the compiler writes through the codec
    read = loads(written, str(path))
    assert read == bundle.lock
    assert dumps(read) == written
    assert bundle_id(read) == read.bundle_id


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.parent.name)
def test_the_version_fixtures_round_trip(path: Path) -> None:
    read = loads(path.read_bytes(), str(path))
    assert read.jobs and loads(dumps(read), str(path)) == read
    # Written before `backend` existed: read as bash, and written from now on.
    assert {j.backend for j in read.jobs} == {"bash"}


def test_an_array_bundle_round_trips_with_its_throttle() -> None:
    bundle = compile_file(
        EXAMPLES / "demo.yaml", overrides=["slurm.array=true", "+slurm.array_throttle=2"]
    )
    assert bundle.lock.arrays
    assert all(j.array_throttle == 2 for j in bundle.lock.jobs)
    assert loads(dumps(bundle.lock), "x") == bundle.lock


def test_a_wrong_type_in_a_job_names_the_file_and_the_path(tmp_path: Path) -> None:
    data = json.loads(FIXTURES[0].read_bytes())
    data["jobs"][1]["chain_repeat"] = "twice"
    where = tmp_path / "plan.lock.json"
    with pytest.raises(LockfileError) as caught:
        loads(json.dumps(data), str(where))
    text = caught.value.render()
    assert text.startswith(f"{where}: the lockfile breaks its schema at jobs/1/chain_repeat: ")
    assert "'twice' is not of type 'integer'" in text
    assert "hint: recompile the bundle" in text


def test_the_reconciler_reports_the_same_error_for_its_bundle(tmp_path: Path) -> None:
    data = json.loads(FIXTURES[0].read_bytes())
    data["jobs"][0]["restart"] = {"max_attempts": "5"}
    (tmp_path / "plan.lock.json").write_text(json.dumps(data))
    with pytest.raises(ReconcileError) as caught:
        load_bundle(tmp_path, check_scripts=False)
    assert caught.value.path == str(tmp_path / "plan.lock.json")
    assert "at jobs/0/restart/max_attempts" in caught.value.message
    assert caught.value.exit_code == 2


def test_another_version_and_bad_json_are_refused() -> None:
    with pytest.raises(LockfileError, match="version 2 is not supported"):
        loads(b'{"version": 2}', "p")
    with pytest.raises(LockfileError, match="cannot read the lockfile"):
        loads(b"{", "p")


def test_a_job_in_an_undescribed_array_is_refused() -> None:
    data = json.loads(FIXTURES[0].read_bytes())
    data["jobs"][0].update(array_group="nowhere", array_index=0)
    with pytest.raises(LockfileError, match="array 'nowhere'"):
        loads(json.dumps(data), "p")


def test_inactivity_is_kept_as_written_and_watched_as_a_restart_event() -> None:
    job = LockJob(
        name="j",
        script="jobs/j.sbatch",
        sha256="0" * 64,
        output_dir="o",
        log_path="o/j.log",
        inactivity_threshold_seconds=600,
        restart=RestartPolicy(on=("TIMEOUT",), max_attempts=2),
    )
    lock = Lock("", loads(FIXTURES[0].read_bytes(), "p").project, (job,))
    again = loads(
        dumps(lock).replace(b'"bundle_id": ""', b'"bundle_id": "' + b"0" * 64 + b'"'), "p"
    )
    assert again.jobs[0] == job and again.jobs[0].log_events == ()
    assert again.jobs[0].watched_log_events == (
        {
            "name": "inactivity",
            "kind": "inactivity",
            "seconds": 600,
            "actions": [{"kind": "restart"}],
        },
    )


def test_restart_keys_the_schema_forbids_as_null_are_left_out_when_unset() -> None:
    assert RestartPolicy().to_json() == {
        "on": [],
        "infra_restarts": None,
        "code_restarts": None,
        "progress_file": None,
        "without_progress": None,
    }


@pytest.mark.parametrize(
    "given",
    [{}, {"on": ["FAILED"]}, {"max_attempts": 2, "progress_file": None}, {"backoff_seconds": 0}],
)
def test_a_restart_policy_writes_back_the_keys_it_was_given(given: dict[str, object]) -> None:
    assert RestartPolicy.from_json(given).to_json() == given


def test_a_config_that_deletes_restart_keys_keeps_them_out_of_the_lockfile() -> None:
    bundle = compile_file(
        EXAMPLES / "demo.yaml", overrides=["~job.restart.on", "~job.restart.progress_file"]
    )
    restart = bundle.lock_json["jobs"][0]["restart"]
    assert "on" not in restart and "progress_file" not in restart
    assert bundle.lock.jobs[0].restart.on == ()


def test_the_compilers_own_check_names_the_job_and_field_it_broke() -> None:
    """Checked job by job as the bundle id is made: a bug in the compiler, not a user error."""
    good = loads(FIXTURES[0].read_bytes(), "p")
    bad = dataclasses.replace(good.jobs[1], chain_repeat=0)
    with pytest.raises(AssertionError, match=r"jobs/1/chain_repeat.*less than the minimum"):
        sealed(dataclasses.replace(good, jobs=(good.jobs[0], bad)))
    assert sealed(good).bundle_id == bundle_id(good)
    with pytest.raises(AssertionError, match=r"jobs/1/chain_repeat.*less than the minimum"):
        dump_sealed(dataclasses.replace(good, jobs=(good.jobs[0], bad)), io.StringIO())


def test_policies_equal_in_python_but_written_apart_stay_apart() -> None:
    """Jobs share one record per policy; 0 and 0.0 (and 1 and True) are not the same JSON."""
    for a, b in (({"backoff_seconds": 0}, {"backoff_seconds": 0.0}), ({"on": []}, {})):
        assert RestartPolicy.from_json(a).to_json() == a
        assert json.dumps(RestartPolicy.from_json(b).to_json()) == json.dumps(b)


def _reference(lock: Lock) -> bytes:
    """What the lockfile's bytes are defined as."""
    text = json.dumps(to_json(lock), indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return (text + "\n").encode("utf-8")


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_the_bytes_are_those_of_the_standard_pretty_printer(path: Path) -> None:
    lock = compile_file(path, env={}).lock
    assert dumps(lock) == _reference(lock)


def test_jobs_of_many_shapes_and_hostile_values_keep_their_bytes() -> None:
    """Each job's text comes from the text of its shape: jobs whose params differ in type,
    in keys, or hold text that looks like the shape's own markers, line breaks or quotes."""
    lock = compile_file(EXAMPLES / "demo.yaml", env={}).lock
    base = lock.jobs[0]
    values: list[object] = [
        1,
        "x",
        1.5,
        None,
        True,
        "\ue000" + "0\ue001",
        'a "quoted"\nline\tand \\ back',
        "ünï ✓",
        [1, [2, {"k": "v"}]],
        {"z": 1, "a": {"b": []}},
        {},
        [],
        float("inf"),
        -0.0,
    ]
    jobs = [
        dataclasses.replace(
            base,
            name=f"{base.name}_{n}",
            params={"p": value, **({"q": n} if n % 3 else {})},
            reads=(f"/r/{n}",) if n % 2 else (),
            depends_on=(base.name,) if n % 4 == 1 else (),
        )
        for n, value in enumerate(values)
    ]
    many = dataclasses.replace(lock, jobs=(*lock.jobs, *jobs))
    assert dumps(many) == _reference(many)
    written: list[str] = []
    dump(many, written.append)
    assert "".join(written).encode("utf-8") == _reference(many)
    empty = dataclasses.replace(lock, jobs=())
    assert dumps(empty) == _reference(empty)
    for each in (many, empty):
        _assert_one_pass_writes_the_sealed_lockfile(each)


class _Pieces:
    """A writer that cannot seek (as `compile --check` compares the text it is given)."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def write(self, text: str, /) -> int:
        self.pieces.append(text)
        return len(text)


def _assert_one_pass_writes_the_sealed_lockfile(lock: Lock) -> None:
    """`dump_sealed`: the bundle id and the bytes of `sealed` then `dumps`, in one pass,
    into a text that can seek or through a spool."""
    draft = dataclasses.replace(lock, bundle_id="")
    text = io.StringIO()
    done = dump_sealed(draft, text)
    assert done == sealed(draft)
    assert text.getvalue().encode("utf-8") == _reference(done) == dumps(done)
    pieces = _Pieces()
    assert dump_sealed(draft, pieces) == done
    assert "".join(pieces.pieces).encode("utf-8") == _reference(done)


def test_a_large_lockfile_is_spooled_to_a_file_for_a_writer_that_cannot_seek(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oellm.lockfile import writer

    monkeypatch.setattr(writer, "_SPOOL_MAX", 100)  # past it, the spool is a temporary file
    lock = compile_file(EXAMPLES / "sweeps" / "grid.yaml", env={}).lock
    _assert_one_pass_writes_the_sealed_lockfile(lock)
    with (tmp_path / "plan.lock.json").open("w", encoding="utf-8", newline="") as handle:
        done = dump_sealed(dataclasses.replace(lock, bundle_id=""), handle)
    assert (tmp_path / "plan.lock.json").read_bytes() == _reference(done)


def test_one_pass_seals_every_example_as_two_passes_do() -> None:
    """Arrays (a key before `bundle_id`), moved jobs, a project key and no provenance."""
    for name, overrides in (("demo.yaml", []), ("sweeps/grid.yaml", ["slurm.array=true"])):
        lock = compile_file(EXAMPLES / name, env={}, overrides=overrides).lock
        _assert_one_pass_writes_the_sealed_lockfile(lock)
        moved = dataclasses.replace(
            lock,
            moved={"old": lock.jobs[0].name},
            project=dataclasses.replace(lock.project, key="0123abcd"),
            compiled_with=None,
        )
        _assert_one_pass_writes_the_sealed_lockfile(moved)
