"""`plan.lock.json` written: each job's JSON (`job_json`, `to_json`), the bundle id
(`bundle_id`, `sealed`) and the text (`dump_sealed`, the compiler's: the bundle id made and
the text written in one pass; `dumps` and `dump` give the same bytes of a lock already sealed).

The bytes are pretty JSON with sorted keys and a final newline; `bundle_id` is the sha256 of
the compact JSON (sorted keys) of everything but itself and `compiled_with`. A job's optional
fields are written only when set, so bundles compiled before a field existed keep their bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tempfile
from collections.abc import Callable, Container, Iterator
from typing import IO, Any, Protocol

from .codec import PROVENANCE, VERSION
from .jsonbytes import PrettyJson
from .jsonshape import ShapedJson, ShapedPair
from .model import ArrayGroup, Lock, LockJob, Project, RestartPolicy
from .schema import schema_error


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


__all__ = [
    "Writer",
    "bundle_id",
    "dump",
    "dump_sealed",
    "dumps",
    "job_json",
    "sealed",
    "to_json",
]
