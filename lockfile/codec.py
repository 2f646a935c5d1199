"""`plan.lock.json` as bytes: the writer (`dump_sealed`, the compiler's: the bundle id made and
the text written in one pass; `dumps` and `dump` give the same bytes of a lock already sealed),
the one reader (`loads`: the version, the schema, the records) and the one schema check, for
both halves.

The bytes are pretty JSON with sorted keys and a final newline; `bundle_id` is the sha256 of
the compact JSON (sorted keys) of everything but itself and `compiled_with`. A job's optional
fields are written only when set, so bundles compiled before a field existed keep their bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import io
import json
import sys
import tempfile
from collections.abc import Callable, Container, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from oellm.bundle_files import LOCK_NAME
from oellm.errors import OellmError

from .jsonbytes import PrettyJson
from .jsonshape import ShapedJson, ShapedPair
from .model import ArrayGroup, Lock, LockJob, Project, RestartPolicy

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

VERSION = 1
PROVENANCE = "compiled_with"  # the field outside bundle_id
_RECOMPILE = "recompile the bundle rather than editing plan.lock.json"


class LockfileError(OellmError):
    """A lockfile that cannot be read: not JSON, another version, or off its schema."""

    def __init__(self, message: str, path: str, hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint)

    def render(self) -> str:
        return f"{self.path}: {self.message}" + (f"\n  hint: {self.hint}" if self.hint else "")


# --- writing --------------------------------------------------------------------------------


def job_json(
    job: LockJob, restarts: dict[int, tuple[RestartPolicy, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """A job as the lockfile writes it. `restarts`: the JSON of each restart policy made so
    far, by the policy's id (jobs share their policy: its JSON is made once and shared)."""
    restart = job.restart
    if restarts is None:
        restart_json = restart.to_json()
    else:
        found = restarts.get(id(restart))
        if found is None or found[0] is not restart:
            found = restarts[id(restart)] = (restart, restart.to_json())
        restart_json = found[1]
    out: dict[str, Any] = {
        "name": job.name,
        "stage": job.stage,
        "index": job.index,
        "params": job.params,
        "depends_on": list(job.depends_on),
        "script": job.script,
        "sha256": job.sha256,
        "output_dir": job.output_dir,
        "log_path": job.log_path,
        "log_path_current": job.log_path_current,
        "start_conditions": list(job.start_conditions),
        "cancel_conditions": list(job.cancel_conditions),
        "inactivity_threshold_seconds": job.inactivity_threshold_seconds,
        "chain_repeat": job.chain_repeat,
        "restart": restart_json,
        "log_events": list(job.log_events),
        "state_events": list(job.state_events),
        "array": job.array,
        "backend": job.backend,
    }
    # Optional fields, only written when set.
    if job.dependency != "reconciler":
        out["dependency"] = job.dependency
    if job.finish_condition:
        out["finish_condition"] = job.finish_condition
    if job.wandb:
        out["wandb"] = job.wandb
    if job.reads:
        out["reads"] = list(job.reads)
    if job.array_group is not None:
        out["array_group"] = job.array_group
        out["array_index"] = job.array_index
    return out


def _array_json(group: ArrayGroup) -> dict[str, Any]:
    return {
        "script": group.script,
        "sha256": group.sha256,
        "stage": group.stage,
        "size": group.size,
        "throttle": group.throttle,
    }


def _project_json(project: Project) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": project.name,
        "output_dir": project.output_dir,
        "state_dir": project.state_dir,
    }
    if project.key is not None:
        out["key"] = project.key
    if project.max_jobs is not None:
        out["max_jobs"] = project.max_jobs
    return out


def _body(lock: Lock, jobs: list[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"version": VERSION, "project": _project_json(lock.project)}
    body["jobs"] = jobs
    if lock.moved:
        body["moved"] = dict(lock.moved)
    if lock.arrays:
        body["arrays"] = {name: _array_json(a) for name, a in lock.arrays.items()}
    return body


def to_json(lock: Lock) -> dict[str, Any]:
    """The whole lockfile as JSON data (every job's mapping at once: for tools and tests)."""
    return _document(lock, [job_json(job) for job in lock.jobs])


def _document(lock: Lock, jobs: list[Any]) -> dict[str, Any]:
    document = {"bundle_id": lock.bundle_id, **_body(lock, jobs)}
    if lock.compiled_with:
        document[PROVENANCE] = dict(lock.compiled_with)
    return document


def bundle_id(lock: Lock) -> str:
    """The id of `lock`'s contents (`lock.bundle_id` is not read)."""
    return _digest(lock)


def _digest(lock: Lock, each: Callable[[int, dict[str, Any]], None] | None = None) -> str:
    """sha256 of the body's compact JSON (sorted keys), hashed job by job: the same digest as
    of the whole text, without that text, or every job's JSON at once, in memory. `each` sees
    each job's JSON as it goes by."""
    digest = hashlib.sha256()

    def put(text: str) -> None:
        digest.update(text.encode("utf-8"))

    body = _body(lock, [])
    put("{")
    for number, key in enumerate(sorted(body)):
        put(("," if number else "") + _compact(key) + ":")
        if key == "jobs":
            put("[")
            for index, job in enumerate(lock.jobs):
                data = job_json(job)
                if each is not None:
                    each(index, data)
                put(("," if index else "") + _compact(data))
            put("]")
        else:
            put(_compact(body[key]))
    put("}")
    return digest.hexdigest()


def sealed(lock: Lock) -> Lock:
    """The compiler's last step: `lock` with its `bundle_id`, checked against the schema (a
    failure is a bug in oellm, not the user's). Each job's JSON is made once for both, and
    checked alone: the jobs of a large sweep are never all JSON at once."""
    found: list[tuple[str, str]] = []

    def check(index: int, job: dict[str, Any]) -> None:
        error = None if found else schema_error(job, "job")
        if error is not None:
            found.append((f"jobs/{index}/{error[0]}".rstrip("/"), error[1]))

    done = dataclasses.replace(lock, bundle_id=_digest(lock, check))
    error = found[0] if found else schema_error(_document(done, []))
    if error is not None:
        raise AssertionError(f"compiled lockfile breaks schemas/lock.schema.json: {error}")
    return done


_string = json.encoder.encode_basestring  # as jsonbytes writes keys


# As json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")) writes,
# without a new encoder for each job.
_COMPACT = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _compact(value: Any) -> str:
    return _COMPACT.encode(value)


def dumps(lock: Lock) -> bytes:
    """The lockfile's bytes."""
    return "".join(_pretty(lock)).encode("utf-8")


def dump(lock: Lock, write: Callable[[str], object]) -> None:
    """The lockfile's text, written in pieces of a bounded size (the bytes of `dumps`)."""
    for piece in _pretty(lock):
        write(piece)


_JOBS_PER_PIECE = 256
_JOB_INDENT = "\n    "  # a job's lines, inside the document's "jobs" list
_NO_ID = "0" * 64  # the bundle id's place while the document is written (a sha256 in hex)


class Writer(Protocol):
    """Where the lockfile's text goes, in pieces."""

    def write(self, text: str, /) -> object: ...


_SPOOL_MAX = 1 << 22  # characters of a lockfile spooled in memory before a temporary file


def dump_sealed(draft: Lock, handle: Writer) -> Lock:
    """`sealed(draft)` written as `dump` writes it, in one pass over the jobs: each job's JSON
    made and checked once, its compact text hashed and its pretty text written. `bundle_id`
    comes before the jobs, so its place is written first and filled in at the end: in
    `handle` itself when it is a text file that can seek (a staged file, a `StringIO`), else
    in a spool whose text then goes to `handle` (memory stays flat either way)."""
    if isinstance(handle, io.TextIOBase) and handle.seekable():
        return _dump_sealed(draft, handle)
    with tempfile.SpooledTemporaryFile(
        _SPOOL_MAX, mode="w+", encoding="utf-8", newline=""
    ) as spool:
        done = _dump_sealed(draft, spool)
        spool.seek(0)
        while piece := spool.read(1 << 16):
            handle.write(piece)
    return done


def _dump_sealed(draft: Lock, handle: IO[str] | io.TextIOBase) -> Lock:
    digest = hashlib.sha256()
    encoder = PrettyJson()
    # A record per restart policy (jobs share them): its JSON made once and shared.
    restarts: dict[int, tuple[RestartPolicy, dict[str, Any]]] = {}
    entries = ShapedPair(encoder, _compact, _Ids(restarts))
    body = _body(draft, [])
    document = _document(dataclasses.replace(draft, bundle_id=_NO_ID), [])
    out: list[str] = ["{"]
    hashed = 0  # keys of the body hashed so far
    mark = -1
    digest.update(b"{")
    for number, key in enumerate(sorted(document)):
        out.append(("," if number else "") + "\n  " + _string(key) + ": ")
        if key in body:
            digest.update((("," if hashed else "") + _compact(key) + ":").encode("utf-8"))
            hashed += 1
        if key == "bundle_id":
            out.append('"')
            handle.write("".join(out))
            out.clear()
            mark = handle.tell()
            out.append(_NO_ID + '"')
        elif key != "jobs" or not draft.jobs:
            out.append(encoder.dumps(document[key]).replace("\n", "\n  "))
            if key in body:
                digest.update(_compact(body[key]).encode("utf-8"))
        else:
            out.append("[")
            digest.update(b"[")
            for index, job in enumerate(draft.jobs):
                data = job_json(job, restarts)
                error = schema_error(data, "job")
                if error is not None:
                    where = f"jobs/{index}/{error[0]}".rstrip("/")
                    raise AssertionError(
                        f"compiled lockfile breaks schemas/lock.schema.json: {(where, error[1])}"
                    )
                pretty, compact = entries.texts(data)
                out.append(("," if index else "") + _JOB_INDENT)
                out.append(pretty.replace("\n", _JOB_INDENT))
                digest.update((("," if index else "") + compact).encode("utf-8"))
                if len(out) >= _JOBS_PER_PIECE:
                    handle.write("".join(out))
                    out.clear()
            out.append("\n  ]")
            digest.update(b"]")
    out.append("\n}\n")
    digest.update(b"}")
    handle.write("".join(out))
    done = dataclasses.replace(draft, bundle_id=digest.hexdigest())
    error = schema_error(_document(done, []))
    if error is not None:
        raise AssertionError(f"compiled lockfile breaks schemas/lock.schema.json: {error}")
    end = handle.tell()
    handle.seek(mark)
    handle.write(done.bundle_id)
    handle.seek(end)
    return done


class _Ids(Container[int]):
    """The ids of the restart policies' JSON made so far (alive while the lockfile is
    written): shared parts of the jobs' texts."""

    def __init__(self, restarts: dict[int, tuple[RestartPolicy, dict[str, Any]]]) -> None:
        self._restarts = restarts
        self._ids: set[int] = set()

    def __contains__(self, key: object) -> bool:
        if len(self._ids) != len(self._restarts):
            self._ids = {id(made) for _, made in self._restarts.values()}
        return key in self._ids


def _pretty(lock: Lock) -> Iterator[str]:
    """The text of `jsonbytes.PrettyJson` for the whole document, and its final newline, in
    pieces. The jobs of a sweep mostly share one shape (the same fields, the same params),
    so each job's text is the text of its shape filled with its values (`jsonshape`); JSON
    text holds no raw line break, so a text is indented by indenting after each one."""
    encoder = PrettyJson()
    entries = ShapedJson(encoder, ())
    document = _document(lock, [])
    out: list[str] = ["{"]
    for number, key in enumerate(sorted(document)):
        out.append(("," if number else "") + "\n  " + _string(key) + ": ")
        if key != "jobs" or not lock.jobs:
            out.append(encoder.dumps(document[key]).replace("\n", "\n  "))
            continue
        out.append("[")
        for index, job in enumerate(lock.jobs):
            text = entries.dumps(job_json(job)).replace("\n", _JOB_INDENT)
            out.append(("," if index else "") + _JOB_INDENT + text)
            if len(out) >= _JOBS_PER_PIECE:
                yield "".join(out)
                out.clear()
        out.append("\n  ]")
    out.append("\n}\n")
    yield "".join(out)


# --- checking -------------------------------------------------------------------------------

_SCHEMAS = ("lock.schema.json", "experiment.schema.json", "megatron.schema.json")


@functools.cache
def _schemas() -> dict[str, Any]:
    folder = importlib.resources.files("oellm.schemas")
    return {
        name: json.loads(folder.joinpath(name).read_text(encoding="utf-8")) for name in _SCHEMAS
    }


# What is checked: the whole lockfile, or one job of it (its schema within the lockfile's).
Part = Literal["lock", "job"]
_PART_SCHEMA: dict[str, dict[str, Any]] = {
    "lock": {"$ref": "lock.schema.json"},
    "job": {"$ref": "lock.schema.json#/properties/jobs/items"},
}


def validator() -> Draft202012Validator:
    """The detailed validator of lockfile data: run only to explain a failure."""
    return _validator("lock")


@functools.cache
def _validator(part: Part) -> Draft202012Validator:
    # Imported here: a round with a valid lockfile and jsonschema-rs never needs the
    # pure-Python validator, and importing it costs a round about 0.1 s.
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry()
    for name, schema in _schemas().items():
        registry = registry.with_resource(name, Resource.from_contents(schema))
    return Draft202012Validator(_PART_SCHEMA[part], registry=registry)


@functools.cache
def _fast_is_valid(part: Part) -> Callable[[Any], bool] | None:
    """A compiled validator for the common case (a valid lockfile of 10,000 jobs is checked in
    milliseconds), or None without jsonschema-rs."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    registry = jsonschema_rs.Registry(list(_schemas().items()))
    is_valid: Callable[[Any], bool] = jsonschema_rs.Draft202012Validator(
        _PART_SCHEMA[part], registry=registry
    ).is_valid
    return is_valid


def schema_error(data: Any, part: Part = "lock") -> tuple[str, str] | None:
    """Where lockfile data (or one job's) first breaks the schema, as a JSON path ('' for
    the top), and how; None when it is valid."""
    fast = _fast_is_valid(part)
    if fast is not None and fast(data):
        return None
    errors = sorted(_validator(part).iter_errors(data), key=lambda e: list(map(str, e.path)))
    if not errors:
        return None
    return "/".join(map(str, errors[0].path)), errors[0].message


# --- reading --------------------------------------------------------------------------------


def bundle_id_of(data: bytes | str) -> str | None:
    """The `bundle_id` written in lockfile data, unchecked; None when there is none to read
    (a round compares it with the one it loaded, to notice a recompile)."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    found = document.get("bundle_id") if isinstance(document, dict) else None
    return found if isinstance(found, str) else None


class Proven(Protocol):
    """Where the digests of lockfile bytes read strictly before are kept (the reconciler keeps
    the last one in the state dir). Told the lockfile's `project.state_dir`, to find that
    place."""

    def known(self, digest: str, state_dir: str) -> bool: ...

    def keeps(self, state_dir: str) -> bool:
        """Whether `remember` would keep a digest there (a state dir not made yet would not)."""
        ...

    def remember(self, digest: str, state_dir: str) -> None: ...


def loads(
    data: bytes | str, where: str, proven: Proven | None = None, state_dir: str | None = None
) -> Lock:
    """The lockfile in `data` (read from `where`, named in errors): its version and schema
    checked, as records. With `proven`, bytes read strictly before are read again by the
    compiled reader (`fastread`) alone, and bytes both readers agree on are remembered.
    `state_dir`: what `fastread.state_dir(data)` says, when the caller has asked already."""
    if proven is None or isinstance(data, str):
        return _strict(data, where)
    from . import fastread

    # The state dir alone, read first (its bytes unchecked): a read that cannot use a digest
    # (no state dir yet, as for `oellm cancel` of a bundle never reconciled) costs this only.
    if state_dir is None:
        state_dir = fastread.state_dir(data)
    if state_dir is None:
        return _strict(data, where)
    digest = _reader_digest(data)
    if proven.known(digest, state_dir):
        fast = _fast(data, where)
        if fast is not None and fast.project.state_dir == state_dir:
            return fast
    lock = _strict(data, where)
    if proven.keeps(state_dir):
        fast = _fast(data, where)
        # Compared whole, by repr: types too (`0` and `0.0`, `1` and `true` are equal values).
        if fast is not None and repr(fast) == repr(lock):
            proven.remember(digest, state_dir)
    return lock


def _reader_digest(data: bytes) -> str:
    """The digest kept for lockfile bytes: of the bytes and of what judged them (this oellm
    and its lockfile schemas), so that another oellm reads them strictly again."""
    digest = hashlib.sha256(_judge())
    digest.update(data)
    return digest.hexdigest()


@functools.cache
def _judge() -> bytes:
    """What judged lockfile bytes: this oellm (its version, and the source of both readers
    and of the records they make, which a build may change without a new version), msgspec's
    version, and the schemas."""
    import msgspec

    from oellm import __version__

    from . import fastread, model

    folder = importlib.resources.files("oellm.schemas")
    parts = [f"{__version__}:{VERSION}:{msgspec.__version__}".encode()]
    parts += [folder.joinpath(name).read_bytes() for name in _SCHEMAS]
    for module in (sys.modules[__name__], fastread, model):
        source = getattr(module, "__file__", None)
        parts.append(Path(source).read_bytes() if source else module.__name__.encode())
    return hashlib.sha256(b"\0".join(parts)).digest()


def _fast(data: bytes, where: str) -> Lock | None:
    from . import fastread

    found = fastread.decode(data)
    if found is None:
        return None
    head, jobs = found
    try:
        lock = _lock(head, where, tuple(jobs))
    except (LockfileError, LookupError, TypeError, AttributeError, ValueError):
        return None
    # Its project tells where the digests are kept: texts, as the schema says, or none.
    project = lock.project
    if not all(type(text) is str for text in (project.name, project.output_dir, project.state_dir)):
        return None
    return lock


def _strict(data: bytes | str, where: str) -> Lock:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise LockfileError(f"cannot read the lockfile: {exc}", where, _RECOMPILE) from None
    except RecursionError:
        raise LockfileError(
            "cannot read the lockfile: it is nested too deeply", where, _RECOMPILE
        ) from None
    version = document.get("version") if isinstance(document, dict) else None
    if version != VERSION:
        raise LockfileError(
            f"lockfile version {version!r} is not supported (this oellm reads version {VERSION})",
            where,
            hint="recompile the bundle with this oellm, or use the oellm that wrote it",
        )
    found = schema_error(document)
    if found is not None:
        path, message = found
        raise LockfileError(
            f"the lockfile breaks its schema at {path or 'the top'}: {message}", where, _RECOMPILE
        )
    return _lock(document, where)


def _lock(data: Mapping[str, Any], where: str, jobs: tuple[LockJob, ...] | None = None) -> Lock:
    """The lock of decoded lockfile data; `jobs`: its jobs, already made (`fastread`)."""
    arrays = {
        name: ArrayGroup(name, a["script"], a["sha256"], a["size"], a["throttle"], stage=a["stage"])
        for name, a in data.get("arrays", {}).items()
    }
    project = data["project"]
    return Lock(
        bundle_id=data["bundle_id"],
        project=Project(
            project["name"],
            project["output_dir"],
            project["state_dir"],
            project.get("key"),
            project.get("max_jobs"),
        ),
        jobs=tuple(_job(j, arrays, where) for j in data["jobs"]) if jobs is None else jobs,
        moved=dict(data.get("moved", {})),
        arrays=arrays,
        compiled_with=data.get(PROVENANCE),
    )


def _job(j: Mapping[str, Any], arrays: Mapping[str, ArrayGroup], where: str) -> LockJob:
    group = j.get("array_group")
    if group is not None and group not in arrays:
        raise LockfileError(
            f"job {j['name']} is in array {group!r}, which the lockfile does not describe",
            where,
            _RECOMPILE,
        )
    return LockJob(
        name=j["name"],
        stage=j["stage"],
        index=j["index"],
        params=j["params"],
        depends_on=tuple(j["depends_on"]),
        script=j["script"],
        sha256=j["sha256"],
        output_dir=j["output_dir"],
        log_path=j["log_path"],
        log_path_current=j["log_path_current"],
        start_conditions=tuple(j["start_conditions"]),
        cancel_conditions=tuple(j["cancel_conditions"]),
        inactivity_threshold_seconds=j["inactivity_threshold_seconds"],
        chain_repeat=j["chain_repeat"],
        restart=RestartPolicy.from_json(j["restart"]),
        array=j["array"],
        log_events=tuple(j["log_events"]),
        state_events=tuple(j["state_events"]),
        array_group=group,
        array_index=j.get("array_index"),
        array_throttle=arrays[group].throttle if group is not None else None,
        dependency=j.get("dependency", "reconciler"),
        finish_condition=j.get("finish_condition"),
        backend=j.get("backend", "bash"),
        wandb=j.get("wandb"),
        reads=tuple(j.get("reads", ())),
    )


__all__ = [
    "LOCK_NAME",
    "VERSION",
    "LockfileError",
    "Proven",
    "bundle_id",
    "dump",
    "dump_sealed",
    "dumps",
    "loads",
    "sealed",
    "to_json",
    "validator",
]
