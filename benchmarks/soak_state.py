"""The bundle's files as the soak reads them and damages them between rounds: the lockfile
(the jobs, their array members and chains), the state dir (its identity key, its records and
the job ids they name), and the lock files it plants (a dead holder's, an empty one)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from soak_report import Tally  # a sibling module: benchmarks/ is not a package


class State:
    """The files of the bundle at `bundle`; the damage is drawn from `rng`, counted in `tally`."""

    def __init__(self, bundle: Path, rng: random.Random, tally: Tally) -> None:
        self.bundle = bundle
        self.rng = rng
        self.tally = tally
        self.identity_keys: set[str] = set()

    # -- reading

    def lock(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.bundle / "plan.lock.json").read_text())
        return data

    def state_dir(self) -> Path:
        path = Path(self.lock()["project"]["state_dir"])
        return path if path.is_absolute() else self.bundle.parent / path

    def note_identity(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.identity_keys.add(
                json.loads((self.state_dir() / "identity.json").read_text())["key"]
            )

    def records(self) -> list[Path]:
        # Those of jobs in flight, and of jobs a round settled (moved to `completed/`).
        found = [*self.state_dir().glob("jobs/*/attempt-*.json")]
        found += self.state_dir().glob("completed/*/attempt-*.json")
        return sorted(found)

    def recorded_ids(self) -> set[str]:
        ids: set[str] = set()
        for path in self.records():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            ids |= {data["job_id"]} if data.get("job_id") else set()
            ids |= {link["job_id"] for link in data.get("links", []) if link.get("job_id")}
        return ids

    def members(self) -> dict[tuple[str, int], str]:
        return {
            (job["array_group"], job["array_index"]): job["name"]
            for job in self.lock()["jobs"]
            if job.get("array_group") is not None
        }

    def chains(self) -> set[str]:
        return {job["name"] for job in self.lock()["jobs"] if job.get("chain_repeat", 1) > 1}

    # -- damage

    def delete_record(self) -> str:
        found = self.records()
        if not found:
            return "no record to delete"
        victim = self.rng.choice(found)
        victim.unlink(missing_ok=True)
        self.tally.record_deletions += 1
        return f"deleted {victim.parent.name}/{victim.name}"

    def delete_state_dir(self) -> str:
        state = self.state_dir()
        if not state.exists():
            return "no state dir to delete"
        for child in state.iterdir():
            if child.name == "local":  # the local scheduler's processes: not SLURM's business
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        self.tally.state_dir_deletions += 1
        return f"deleted the state dir {state}"

    def plant_lock(self, empty: bool) -> str:
        path = self.state_dir() / "reconcile.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        if empty:
            # An older oellm died between O_EXCL and its write; old enough to count as abandoned.
            path.write_bytes(b"")
            old = time.time() - 120
            os.utime(path, (old, old))
            self.tally.empty_locks += 1
            return "empty lock file planted"
        dead = subprocess.Popen(["true"])
        dead.wait()
        holder = {
            "host": socket.gethostname(),
            "pid": dead.pid,
            "token": secrets.token_hex(8),
            "expires": time.time() + 900,
        }
        path.write_text(json.dumps(holder))
        self.tally.stale_locks += 1
        return f"stale lock of dead pid {dead.pid} planted"
