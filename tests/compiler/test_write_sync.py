"""The order in which `oellm compile` makes a bundle durable, read from the system calls it
makes (under strace): every file is written into the staging folder, then that folder's file
system is synced, then the folder is renamed into place and the rename synced. A bundle that a
crash could show half-written, or a sync of another file system than the bundle's, fails here.
Skipped where strace is missing or may not trace."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, write

# The calls that write, sync or move; `-y` prints the path behind each file descriptor.
TRACED = "openat,write,pwrite64,syncfs,sync,fsync,fdatasync,rename,renameat,renameat2"
# `PID name(args) = result` (`-f` puts the PID first; `-qq` drops attach/exit notes).
CALL = re.compile(r"^\d+\s+(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<result>-?\d+)")
FD_PATH = re.compile(r"^-?\d+<(?P<path>[^>]*)>")
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')

EXPERIMENT = """
project: {name: sync}
job: {name: "sync_${vars.a}"}
backend: {bash: {command: "echo ${vars.a}"}}
vars: {a: 0}
sweep:
  grids:
    - vars.a: [%s]
"""


@dataclass(frozen=True)
class Call:
    name: str
    args: str

    @property
    def fd_path(self) -> str | None:
        """The path of the file descriptor this call's first argument is (`-y`)."""
        found = FD_PATH.match(self.args)
        return None if found is None else found.group("path")

    @property
    def paths(self) -> list[str]:
        return QUOTED.findall(self.args)


pytestmark = pytest.mark.strace


def _compile_traced(experiment: Path, out: Path, log: Path) -> list[Call]:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    command = [
        *("strace", "-f", "-y", "-qq", "-e", f"trace={TRACED}", "-o", str(log)),
        *(sys.executable, "-m", "oellm", "compile", str(experiment), "-o", str(out)),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and not log.exists():
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = []
    for line in log.read_text().splitlines():
        found = CALL.match(line)
        if found is not None and found.group("result") != "-1":
            calls.append(Call(found.group("name"), found.group("args")))
    return calls


def _swap(calls: list[Call], out: Path) -> tuple[int, str]:
    """The index of the rename that puts the staging folder in place, and that folder."""
    for i, call in enumerate(calls):
        if call.name.startswith("rename") and call.paths[-1:] == [str(out)]:
            return i, call.paths[0]
    raise AssertionError(f"no rename to {out}")


def _check_durable_order(calls: list[Call], out: Path) -> None:
    swap, staging = _swap(calls, out)
    assert Path(staging).parent == out.parent, "staged beside the bundle, on its file system"
    inside = staging + "/"
    writes = [
        i
        for i, call in enumerate(calls)
        if call.name in ("write", "pwrite64") and (call.fd_path or "").startswith(inside)
    ]
    made = {
        call.paths[0].removeprefix(inside)
        for call in calls
        if call.name == "openat" and "O_CREAT" in call.args and call.paths[0].startswith(inside)
    }
    # Every file of the bundle was written into the staging folder (none linked: a first
    # compile), and written before anything was synced.
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert made == on_disk
    syncs = [
        i
        for i, call in enumerate(calls)
        if (call.name == "syncfs" and call.fd_path == staging) or call.name == "sync"
    ]
    assert syncs, "the staging folder's file system is synced (syncfs of that folder, or sync)"
    assert max(writes) < syncs[0] < swap, "all files written, then synced, then swapped in"
    # The rename is made durable by a sync of the folder it is in, after it.
    assert any(
        call.name in ("fsync", "fdatasync") and call.fd_path == str(out.parent)
        for call in calls[swap + 1 :]
    ), "the folder holding the bundle is synced after the swap"


def test_a_first_compile_syncs_every_file_before_the_swap(tmp_path: Path) -> None:
    experiment = write(tmp_path / "exp.yaml", EXPERIMENT % "0, 1, 2")
    out = tmp_path / "bundle"
    calls = _compile_traced(experiment, out, tmp_path / "strace.log")
    _check_durable_order(calls, out)


def test_a_recompile_retires_the_old_bundle_after_the_sync(tmp_path: Path) -> None:
    experiment = write(tmp_path / "exp.yaml", EXPERIMENT % "0, 1, 2")
    out = tmp_path / "bundle"
    _compile_traced(experiment, out, tmp_path / "first.log")
    old_lock = (out / "plan.lock.json").read_bytes()
    # One job replaced by another: its files are written anew, the others' linked.
    write(experiment, EXPERIMENT % "0, 1, 3")
    calls = _compile_traced(experiment, out, tmp_path / "second.log")
    swap, staging = _swap(calls, out)
    syncs = [i for i, c in enumerate(calls) if c.name in ("syncfs", "sync")]
    # The old bundle is moved aside only once the new one is on disk, then the new one takes
    # its place.
    retire = next(
        i for i, c in enumerate(calls) if c.name.startswith("rename") and c.paths[0] == str(out)
    )
    assert syncs and syncs[0] < retire < swap
    assert any(c.name == "syncfs" and c.fd_path == staging for c in calls[:retire])
    assert any(
        c.name in ("fsync", "fdatasync") and c.fd_path == str(out.parent) for c in calls[swap:]
    )
    assert (out / "plan.lock.json").read_bytes() != old_lock
