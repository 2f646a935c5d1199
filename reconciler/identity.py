"""Which bundle a state dir belongs to, and the key its submissions are tagged with.

The key of every tag (`oellm.<key>.<job>.<attempt>`, tags.py) is made once, from the project
name and the state dir, and kept in `<state_dir>/identity.json` with the bundle that uses it: a
state dir lost whole gets the same key back (so its jobs are found again in SLURM), a state dir
moved with `oellm compile --move-state` keeps its key, and a second bundle that would share the
state dir is refused rather than mixing its records and tags with the first one's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from oellm.bundle_files import LOCK_NAME
from oellm.lockfile.model import Project

from . import tags
from .errors import ReconcileError

# The records, their codec and the state lock are imported where they are used: `oellm
# compile` asks `state_change` whether the state dir moves, and most compiles never read a
# record (about 0.04 s of imports).

IDENTITY_NAME = "identity.json"


# How the records are laid out. 2: jobs that completed are settled in `completed/`, and many
# drops or cancels can be one record (`drops/`, `cancels/`). An oellm that knows only layout 1
# refuses an identity with this field (it reads records strictly) instead of taking a settled
# job for one never submitted.
LAYOUT = 2


@dataclass(frozen=True)
class Identity:
    project: str
    key: str
    bundle: str  # the bundle folder that uses this state dir, as an absolute path
    layout: int = 1


def default_key(project: str, state_dir: str) -> str:
    return hashlib.sha256(f"{project}\0{state_dir}".encode()).hexdigest()[:8]


def read_identity(state_path: Path) -> Identity | None:
    from .codec import RecordInvalid, decode

    path = state_path / IDENTITY_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReconcileError(
            f"cannot read the state dir's identity: {exc.strerror}", str(path)
        ) from None
    try:
        found = decode(Identity, json.loads(text))
    except (RecordInvalid, ValueError) as exc:
        raise ReconcileError(
            f"damaged state identity ({exc})",
            str(path),
            hint="it names the bundle this state dir belongs to and the key of its jobs' tags; "
            "restore it, or move it aside: it is made again from the project name and the "
            "state dir",
        ) from None
    if found.layout > LAYOUT:
        raise ReconcileError(
            f"the state dir's records are laid out for a newer oellm (layout {found.layout}; "
            f"this oellm reads up to {LAYOUT})",
            str(path),
            hint="run this bundle with the oellm version that wrote it (on every login node "
            "whose cron reconciles it)",
        )
    return found


def key_for(
    bundle_path: Path, project: str, state_dir: str, state_path: Path, kept: str | None = None
) -> str:
    """The tag key of this bundle's jobs: the state dir's, else the one the lockfile kept
    through a move of the state dir, else the one its records' tags carry, else one made
    from the project name and where the state dir is (its absolute path: two checkouts of
    one experiment in two folders must not find each other's jobs by tag). Refuses a state
    dir that belongs to another bundle."""
    found = read_identity(state_path)
    if found is None:
        return kept or recorded_key(state_path) or default_key(project, _absolute(state_path))
    check(found, bundle_path, project, state_path)
    return found.key


def recorded_key(state_path: Path) -> str | None:
    """The key in the tag of an attempt record, if the state dir holds one (its identity file
    lost, or written by an oellm that kept none)."""
    from .records import COMPLETED

    folders: list[Path] = []
    for parent in (state_path / "jobs", state_path / COMPLETED):
        try:
            folders += sorted(p for p in parent.iterdir() if p.is_dir())
        except OSError:
            continue
    for folder in folders:
        for record in sorted(folder.glob("attempt-*.json")):
            try:
                tag = json.loads(record.read_text(encoding="utf-8")).get("tag")
            except (OSError, ValueError, AttributeError):
                continue
            found = tags.key_of(tag) if isinstance(tag, str) else None
            if found:
                return found
    return None


def _absolute(path: Path) -> str:
    return str(path.resolve())


def check(found: Identity, bundle_path: Path, project: str, state_path: Path) -> None:
    here = str(bundle_path.resolve())
    if found.bundle != here or found.project != project:
        raise ReconcileError(
            f"the state dir {state_path} belongs to bundle {found.bundle} (project "
            f"{found.project!r}), not to this bundle {here} (project {project!r}): the two "
            "would share records and SLURM tags",
            str(state_path / IDENTITY_NAME),
            hint="give this experiment its own project.state_dir (or project.name) and "
            "recompile; if this bundle is that one moved, or a second checkout of it, pass "
            "--claim-state",
        )


def claim(bundle_path: Path, project: str, key: str, state_path: Path) -> None:
    """Record that this bundle uses the state dir (under the state lock)."""
    from .record_file import write_atomic

    wanted = Identity(project, key, str(bundle_path.resolve()), LAYOUT)
    if read_identity(state_path) != wanted:
        write_atomic(state_path / IDENTITY_NAME, dataclasses.asdict(wanted))


def has_records(state_path: Path) -> bool:
    from .records import COMPLETED

    for parent in (state_path / "jobs", state_path / COMPLETED, state_path / "drops"):
        try:
            if any(not p.name.startswith(".") for p in parent.iterdir()):
                return True
        except OSError:
            continue
    return False


def move_state(old: Path, new: Path, wait: float = 30.0) -> None:
    """Move a state dir (records, identity, lock folder and all) to a new place, holding the
    old one's lock so that no round works on it meanwhile."""
    from .lock import Busy, StateLock

    if new.exists() and any(new.iterdir()):
        raise ReconcileError(
            f"cannot move the state to {new}: that folder is not empty",
            str(new),
            hint="choose another project.state_dir, or move that folder aside first",
        )
    lock = StateLock(old)
    try:
        lock.acquire()
    except Busy as busy:
        raise ReconcileError(
            f"cannot move the state now: {busy}", str(old), hint="try again in a moment"
        ) from None
    try:
        new.parent.mkdir(parents=True, exist_ok=True)
        if new.exists():
            new.rmdir()
        try:
            os.rename(old, new)
        except OSError:
            # Another filesystem: copy, then keep the old folder aside rather than delete it.
            shutil.copytree(old, new, symlinks=True)
            os.rename(old, old.with_name(old.name + ".moved"))
    finally:
        lock.path = new / lock.path.name
        lock.release()


@dataclass(frozen=True)
class StateChange:
    """What a recompile does to the bundle's state: the tag key the new lockfile must keep
    (None: derived as usual), and, for a move, where from and to."""

    key: str | None
    move: tuple[Path, Path] | None = None
    note: str | None = None


def state_change(bundle_dir: Path, project: Project, move: bool, fresh: bool) -> StateChange:
    """Before a recompile replaces `bundle_dir` (the new lock's `project`): whether its state
    dir moves, and with records there, what to do. Refused unless the user said --move-state
    (the records go along under the same key, and the jobs they follow stay followed) or
    --fresh-state (start over). Reads only; `apply` moves."""
    try:
        old = json.loads((bundle_dir / LOCK_NAME).read_text(encoding="utf-8"))["project"]
        old_dir = str(old["state_dir"])
        old_key = old.get("key")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return StateChange(None)  # no bundle there yet (or not one oellm can read)
    root = bundle_dir.resolve().parent
    old_state = _under(root, old_dir)
    new_state = _under(root, project.state_dir)
    if old_state == new_state:
        return StateChange(old_key if isinstance(old_key, str) else None)
    if not has_records(old_state):
        return StateChange(None)
    if old.get("name") != project.name:
        # Another experiment compiled into this folder: its state is its own.
        return StateChange(
            None,
            note=f"this bundle was project {old.get('name')!r}: its jobs recorded in "
            f"{old_state} are no longer followed from here",
        )
    if move:
        found = read_identity(old_state)
        key = (
            found.key
            if found is not None
            else old_key
            or recorded_key(old_state)
            or default_key(old["name"], _absolute(old_state))
        )
        return StateChange(
            key, (old_state, new_state), f"moved the state from {old_state} to {new_state}"
        )
    if fresh:
        return StateChange(
            None,
            note=f"fresh state in {new_state}: the jobs recorded in {old_state} are no longer "
            "followed (cancel them with the previous bundle if they still run)",
        )
    raise ReconcileError(
        f"this compile moves the bundle's state from {old_state} to {new_state} (the state dir "
        "follows project.output_dir, e.g. from OUTPUT_DIR): every job recorded there would "
        "be submitted again",
        str(bundle_dir),
        hint="compile with the same output dir as before, or pass --move-state to take the "
        "records along (running jobs stay followed), or --fresh-state to start over",
    )


def apply_state_change(change: StateChange) -> None:
    if change.move is not None:
        move_state(*change.move)


def _under(root: Path, path: str) -> Path:
    return (root / path) if not Path(path).is_absolute() else Path(path)
