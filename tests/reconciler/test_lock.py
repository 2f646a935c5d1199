"""The reconciler's state lock: exclusive, never visible without its holder, taken over only
from a stale holder (and then only the very one judged stale), a fence before each `sbatch`,
and clear errors for a lock path the user must fix. The contention tests start 10 processes
together and check from their own records that no two ever held the lock at once."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from oellm.cli import main
from oellm.reconciler import lock as lock_module
from oellm.reconciler import lock_takeover
from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.errors import ReconcileError
from oellm.reconciler.lock import (
    CLOCK_SLACK_SECONDS,
    DAMAGED_GRACE_SECONDS,
    LEASE_SECONDS,
    STALL_ENV,
    Busy,
    LockLost,
    RenewFailed,
    StateLock,
)
from oellm.reconciler.lock_file import STATE_LOCK_NAME, parse_holder
from tests.helpers import EXAMPLES


def lock_file(state: Path) -> Path:
    return state / "reconcile.lock"


def put(state: Path, content: str | dict[str, Any], age: float = 0.0) -> Path:
    """Write a lock file by hand; `age` seconds old by its mtime."""
    path = lock_file(state)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def holder_of(state: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(lock_file(state).read_text())
    return data


def live(host: str = "login9", token: str = "theirs") -> dict[str, Any]:
    return {"host": host, "pid": 1, "token": token, "expires": time.time() + 600}


# -- exclusion and takeover -------------------------------------------------------------------


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first = StateLock(tmp_path)
    first.acquire()
    assert holder_of(tmp_path)["token"] == first.token
    with pytest.raises(Busy, match=f"another reconcile is running \\({socket.gethostname()} pid"):
        StateLock(tmp_path).acquire()
    first.release()
    assert not lock_file(tmp_path).exists()
    with StateLock(tmp_path) as lock:
        assert holder_of(tmp_path)["token"] == lock.token
    assert not lock_file(tmp_path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp or aside file left


def test_the_file_format_is_the_four_keys_every_oellm_reads(tmp_path: Path) -> None:
    with StateLock(tmp_path, lease=100) as lock:
        data = holder_of(tmp_path)
    assert sorted(data) == ["expires", "host", "pid", "token"]
    mine = (socket.gethostname(), os.getpid(), lock.token)
    assert (data["host"], data["pid"], data["token"]) == mine
    assert time.time() + 90 < data["expires"] <= time.time() + 100


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    put(tmp_path, {**live(socket.gethostname(), "dead"), "pid": dead_pid()})
    with StateLock(tmp_path) as lock:
        assert holder_of(tmp_path)["token"] == lock.token


def test_expired_lease_from_another_host_is_taken_over(tmp_path: Path) -> None:
    put(tmp_path, {"host": "login9", "pid": 1, "token": "old", "expires": 1.0})
    with StateLock(tmp_path) as lock:
        assert holder_of(tmp_path)["token"] == lock.token


def test_live_lease_from_another_host_is_respected(tmp_path: Path) -> None:
    path = put(tmp_path, live(), age=3600)  # an old file, but its lease is refreshed content
    before = path.read_bytes()
    with pytest.raises(Busy, match="login9 pid 1"):
        StateLock(tmp_path).acquire()
    assert path.read_bytes() == before


def test_a_live_holder_on_this_host_is_respected(tmp_path: Path) -> None:
    put(tmp_path, {**live(socket.gethostname()), "pid": os.getpid()})
    with pytest.raises(Busy):
        StateLock(tmp_path).acquire()


UNREADABLE = {
    "empty": "",
    "half written": '{"host": "x", "pi',
    "not json": "garbage{",
    "a list": "[1, 2]",
    "string pid": json.dumps({"host": "h", "pid": "12", "token": "t", "expires": 1e12}),
    "string expires": json.dumps({"host": "h", "pid": 12, "token": "t", "expires": "soon"}),
    "bool pid": json.dumps({"host": "h", "pid": True, "token": "t", "expires": 1.0}),
    "missing token": json.dumps({"host": "h", "pid": 12, "expires": 1.0}),
    "empty token": json.dumps({"host": "h", "pid": 12, "token": "", "expires": 1.0}),
    "null host": json.dumps({"host": None, "pid": 12, "token": "t", "expires": 1.0}),
    "binary": "\udcff\udcfe",
}


@pytest.mark.parametrize("content", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_an_unreadable_lock_is_busy_while_fresh_and_stale_after_the_grace(
    tmp_path: Path, content: str
) -> None:
    path = lock_file(tmp_path)
    path.write_bytes(content.encode(errors="surrogateescape"))
    with pytest.raises(Busy, match="lock being written, or damaged"):
        StateLock(tmp_path).acquire()
    assert path.read_bytes() == content.encode(errors="surrogateescape")
    old = time.time() - 61
    os.utime(path, (old, old))
    with StateLock(tmp_path) as lock:
        assert holder_of(tmp_path)["token"] == lock.token


def test_a_lease_beyond_what_oellm_writes_is_invalid(tmp_path: Path) -> None:
    years = {**live(), "expires": time.time() + 3 * 365 * 86400}
    put(tmp_path, years)
    with pytest.raises(Busy):  # still within the grace of its mtime
        StateLock(tmp_path).acquire()
    put(tmp_path, years, age=61)
    with StateLock(tmp_path) as lock:
        assert holder_of(tmp_path)["token"] == lock.token


def test_a_lease_within_the_clock_slack_is_honoured(tmp_path: Path) -> None:
    ahead = {**live(), "expires": time.time() + LEASE_SECONDS + CLOCK_SLACK_SECONDS - 60}
    put(tmp_path, ahead, age=3600)
    with pytest.raises(Busy, match="login9"):
        StateLock(tmp_path).acquire()


def test_parse_holder_accepts_an_integer_expiry_and_extra_keys() -> None:
    holder = parse_holder(b'{"host": "h", "pid": 3, "token": "t", "expires": 5, "new": 1}')
    assert holder is not None and holder.expires == 5.0
    assert parse_holder(b'{"host": "h", "pid": 3, "token": "t", "expires": NaN}') is None


def test_the_lease_may_not_exceed_what_others_accept(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lease"):
        StateLock(tmp_path, lease=LEASE_SECONDS + 1)


# -- never visible without its holder ---------------------------------------------------------


def test_during_a_stalled_write_the_lock_is_absent_never_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STALL_ENV, "0.5")
    lock = StateLock(tmp_path)
    worker = threading.Thread(target=lock.acquire)
    worker.start()
    seen: list[bytes | None] = []
    while worker.is_alive():
        try:
            seen.append(lock_file(tmp_path).read_bytes())
        except FileNotFoundError:
            seen.append(None)
        time.sleep(0.005)
    worker.join()
    assert lock.held
    assert seen.count(None) > 20, "the stall did not happen before the lock appeared"
    assert all(parse_holder(raw) is not None for raw in seen if raw is not None), seen
    assert holder_of(tmp_path)["token"] == lock.token
    lock.release()


def test_a_stalled_writer_that_lost_the_race_reports_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STALL_ENV, "0.4")
    slow = StateLock(tmp_path)
    failure: list[BaseException] = []

    def take() -> None:
        try:
            slow.acquire()
        except Busy as busy:
            failure.append(busy)

    worker = threading.Thread(target=take)
    worker.start()
    time.sleep(0.1)
    monkeypatch.delenv(STALL_ENV)
    with StateLock(tmp_path) as fast:
        worker.join()
        assert not slow.held and len(failure) == 1
        assert holder_of(tmp_path)["token"] == fast.token


def test_without_hard_links_it_falls_back_to_exclusive_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake link() that fails as on a filesystem without hard links (EPERM, as FAT and some
    FUSE mounts answer); no such filesystem can be mounted in a test."""

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    first = StateLock(tmp_path)
    first.acquire()
    assert holder_of(tmp_path)["token"] == first.token
    with pytest.raises(Busy):
        StateLock(tmp_path).acquire()
    first.release()
    assert sorted(tmp_path.iterdir()) == []


# -- takeover hands back what was not stale ---------------------------------------------------


def test_a_takeover_that_moved_a_fresh_lock_gives_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between our check and our rename a contender replaced the stale lock with its own: a
    fake rename() puts that lock in place just before the real rename runs."""
    put(tmp_path, {"host": "login9", "pid": 1, "token": "old", "expires": 1.0})
    fresh = json.dumps(live(token="winner"))
    real_rename = os.rename

    def contender_first(src: Any, dst: Any) -> None:
        if Path(src) == lock_file(tmp_path) and ".stale." in str(dst):
            tmp = tmp_path / "winner.tmp"
            tmp.write_text(fresh)
            real_rename(tmp, src)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", contender_first)
    with pytest.raises(Busy, match="login9 pid 1"):
        StateLock(tmp_path).acquire()
    assert lock_file(tmp_path).read_text() == fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconcile.lock"]


def test_a_takeover_rechecks_the_file_before_moving_it(tmp_path: Path) -> None:
    put(tmp_path, {"host": "login9", "pid": 1, "token": "old", "expires": 1.0})
    lock = StateLock(tmp_path)
    judged = lock.read(lock_file(tmp_path))
    assert judged is not None and lock._stale(judged, time.time())
    put(tmp_path, live(token="winner"))  # a contender took over after our read
    assert not lock_takeover.take_over(lock, judged)
    assert holder_of(tmp_path)["token"] == "winner"


# -- the fence, refresh and release -----------------------------------------------------------


def test_verify_passes_while_held_and_fails_once_taken(tmp_path: Path) -> None:
    lock = StateLock(tmp_path)
    lock.acquire()
    lock.verify()
    put(tmp_path, live(token="thief"))
    with pytest.raises(LockLost, match="another reconcile took it over"):
        lock.verify()
    assert not lock.held
    lock.release()  # not ours any more: left alone
    assert holder_of(tmp_path)["token"] == "thief"


def test_verify_fails_when_the_lock_is_gone(tmp_path: Path) -> None:
    lock = StateLock(tmp_path)
    lock.acquire()
    lock_file(tmp_path).unlink()
    with pytest.raises(LockLost, match=str(lock_file(tmp_path))):
        lock.verify()


def test_verify_fails_when_our_lease_ran_out(tmp_path: Path) -> None:
    lock = StateLock(tmp_path, lease=0.2)
    lock.acquire()
    time.sleep(0.3)
    with pytest.raises(LockLost, match="lease ran out"):
        lock.verify()


def test_verify_renews_a_lease_past_its_half(tmp_path: Path) -> None:
    lock = StateLock(tmp_path, lease=1.0)
    lock.acquire()
    first = holder_of(tmp_path)["expires"]
    lock.verify()
    assert holder_of(tmp_path)["expires"] == first  # more than half left: one read, no write
    time.sleep(0.6)
    lock.verify()
    assert holder_of(tmp_path)["expires"] > first + 0.5
    assert holder_of(tmp_path)["token"] == lock.token
    lock.release()


def test_a_renewal_the_state_dir_refuses_is_renew_failed_and_leaves_the_lock_as_it_was(
    tmp_path: Path,
) -> None:
    lock = StateLock(tmp_path, lease=60)
    lock.acquire()
    before = lock_file(tmp_path).read_bytes()
    # A folder where the renewal writes its temp file: that write fails.
    (tmp_path / f".reconcile.lock.{lock.token}.{os.getpid()}.tmp").mkdir()
    with pytest.raises(RenewFailed, match="could not renew the state lock's lease") as failed:
        lock.refresh()
    assert failed.value.exit_code == 75
    assert lock_file(tmp_path).read_bytes() == before  # still ours, unchanged
    lock.release()


def test_the_lease_comes_from_the_environment_within_what_others_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OELLM_LOCK_LEASE_SECONDS", "2.5")
    assert StateLock(tmp_path).lease == 2.5
    for wrong in ("0", "-1", "nan", "soon", str(LEASE_SECONDS + 1)):
        monkeypatch.setenv("OELLM_LOCK_LEASE_SECONDS", wrong)
        assert StateLock(tmp_path).lease == LEASE_SECONDS
    assert StateLock(tmp_path, lease=3).lease == 3


def test_refresh_extends_our_lease_and_never_replaces_another(tmp_path: Path) -> None:
    lock = StateLock(tmp_path, lease=60)
    lock.acquire()
    first = holder_of(tmp_path)["expires"]
    time.sleep(0.01)
    lock.refresh()
    assert holder_of(tmp_path)["expires"] > first
    theirs = put(tmp_path, live(token="theirs")).read_bytes()
    with pytest.raises(LockLost):
        lock.refresh()
    assert lock_file(tmp_path).read_bytes() == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconcile.lock"]


def test_release_leaves_a_lock_that_is_not_ours(tmp_path: Path) -> None:
    lock = StateLock(tmp_path)
    lock.acquire()
    theirs = put(tmp_path, live(token="theirs")).read_bytes()
    lock.release()
    assert lock_file(tmp_path).read_bytes() == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconcile.lock"]


# -- waiting ----------------------------------------------------------------------------------


def test_acquire_waits_for_a_holder_that_lets_go(tmp_path: Path) -> None:
    first = StateLock(tmp_path)
    first.acquire()
    timer = threading.Timer(0.4, first.release)
    timer.start()
    started = time.monotonic()
    second = StateLock(tmp_path)
    second.acquire(wait=3)
    waited = time.monotonic() - started
    assert holder_of(tmp_path)["token"] == second.token
    second.release()
    timer.join()
    assert 0.35 < waited < 3.0


def test_acquire_gives_up_after_its_wait(tmp_path: Path) -> None:
    put(tmp_path, live())
    started = time.monotonic()
    with pytest.raises(Busy, match="login9"):
        StateLock(tmp_path).acquire(wait=0.5)
    assert 0.45 < time.monotonic() - started < 1.5


# -- paths the user must fix ------------------------------------------------------------------


def test_a_lock_that_is_a_folder_is_a_reconcile_error(tmp_path: Path) -> None:
    lock_file(tmp_path).mkdir()
    with pytest.raises(ReconcileError) as info:
        StateLock(tmp_path).acquire()
    assert info.value.path == str(lock_file(tmp_path))
    assert "is a folder" in info.value.message and info.value.hint


def test_a_lock_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(lock_file(tmp_path))
    with pytest.raises(ReconcileError, match="not a regular file"):
        StateLock(tmp_path).acquire()


def _acquire_as_nobody(state: Path) -> str:
    """Run in a child that dropped root (root reads any file): what acquire() raised."""
    os.setgid(65534)
    os.setuid(65534)
    try:
        StateLock(state).acquire()
    except ReconcileError as error:
        return error.render()
    return "acquired"


def test_an_unreadable_lock_is_a_reconcile_error(tmp_path: Path) -> None:
    state = Path(tmp_path.root) / "tmp" / f"oellm-lock-test-{os.getpid()}"
    state.mkdir(mode=0o777)
    os.chmod(state, 0o777)
    try:
        put(state, live()).chmod(0o000)
        if os.geteuid() == 0:
            with multiprocessing.get_context("fork").Pool(1) as pool:
                rendered = pool.apply(_acquire_as_nobody, (state,))
        else:
            try:
                StateLock(state).acquire()
                rendered = "acquired"
            except ReconcileError as error:
                rendered = error.render()
        assert rendered.startswith(f"{lock_file(state)}: cannot read the state lock"), rendered
        assert "Permission denied" in rendered and "hint:" in rendered
    finally:
        lock_file(state).unlink()
        state.rmdir()


def test_a_folder_lock_is_exit_2_at_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    assert main(["compile", str(EXAMPLES / "demo.yaml"), "-o", "b"]) == 0
    state = load_bundle(tmp_path / "b").state_path
    state.mkdir(parents=True, exist_ok=True)
    lock_file(state).mkdir()
    capsys.readouterr()
    code = main(["reconcile", "b", "--scheduler", "local"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{lock_file(state)}: the state lock is a folder" in err
    assert "hint:" in err and "Traceback" not in err


# -- contention: 10 processes started together ------------------------------------------------

PROCESSES = 10
HOLD_SECONDS = 0.06


def _contend(state: str, log: str, barrier: Any, stall: str, grace: float) -> None:
    """One contender: start with the others, try until it held the lock once, and record
    (pid, entered, left) while holding it. Uses only acquire()/release() with no arguments, so
    the same worker can be run against older versions of the lock."""
    if stall:
        os.environ[STALL_ENV] = stall
    barrier.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lock = StateLock(Path(state), grace=grace)
        try:
            lock.acquire()
        except Busy:
            time.sleep(0.01)
            continue
        entered = time.monotonic()
        time.sleep(HOLD_SECONDS)
        left = time.monotonic()
        lock.release()
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {entered} {left}\n")
        return


def overlaps(intervals: list[tuple[float, float]]) -> int:
    ordered = sorted(intervals)
    return sum(1 for a, b in itertools.pairwise(ordered) if b[0] < a[1])


def contend_once(tmp_path: Path, present: str, stall: str = "") -> list[tuple[float, float]]:
    state = tmp_path / "state"
    state.mkdir(parents=True)
    if present == "dead pid":
        put(state, {**live(socket.gethostname(), "dead"), "pid": dead_pid()})
    elif present == "empty":
        put(state, "", age=120)
    elif present == "garbled":
        put(state, '{"host": "x", "pid": "7", "tok', age=120)
    grace = DAMAGED_GRACE_SECONDS
    if present == "abandoned breaker":
        # A contender died while moving the garbled lock, its breaker left behind; the
        # contenders come once the breaker has been still for their grace.
        put(state, '{"host": "x", "pid": "7", "tok', age=120)
        os.link(lock_file(state), breaker_of(state, 0))
        grace = 1.0
        time.sleep(grace + 0.5)
    log = tmp_path / "holders.log"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(PROCESSES)
    procs = [
        context.Process(target=_contend, args=(str(state), str(log), barrier, stall, grace))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == PROCESSES, f"only {len(rows)} of {PROCESSES} contenders ever held it"
    assert list(state.iterdir()) == []  # no lock, and no breaker or temporary file left
    return [(float(entered), float(left)) for _, entered, left in rows]


@pytest.mark.parametrize("present", ["none", "dead pid", "empty", "garbled", "abandoned breaker"])
def test_ten_processes_started_together_hold_it_one_at_a_time(tmp_path: Path, present: str) -> None:
    found = []
    for rep in range(6):
        intervals = contend_once(tmp_path / str(rep), present)
        found.append(overlaps(intervals))
    assert found == [0] * len(found), f"overlapping holders per repetition: {found}"


def test_ten_processes_with_a_stalled_write_hold_it_one_at_a_time(tmp_path: Path) -> None:
    found = []
    for rep in range(3):
        intervals = contend_once(tmp_path / str(rep), "empty", stall="0.05")
        found.append(overlaps(intervals))
    assert found == [0] * len(found), f"overlapping holders per repetition: {found}"


def test_a_contender_late_with_a_stale_lock_never_moves_the_new_holders_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B judged the lock stale and re-checked it; A then took it over and created its own;
    C tries while B goes on. B must not move A's lock out of the way (C would then create
    one in the gap, and A and C would both hold it): at most one of A and C holds it, and
    nothing is left beside the lock."""
    put(tmp_path, "", age=120)  # damaged, and still for longer than the grace: stale
    a, b, c = StateLock(tmp_path), StateLock(tmp_path), StateLock(tmp_path)
    stale = b.read(b.path)
    assert stale is not None and b._stale(stale, time.time())
    real_read = StateLock.read
    reads = 0

    def read(self: StateLock, path: Path) -> Any:
        nonlocal reads
        found = real_read(self, path)
        if self is b:
            reads += 1
            if reads == 1:  # B's re-check saw the stale lock; A takes it over now
                a.acquire()
            elif reads == 2:  # B goes on; C tries meanwhile
                with contextlib.suppress(Busy):
                    c.acquire()
        return found

    monkeypatch.setattr(StateLock, "read", read)
    assert lock_takeover.take_over(b, stale) is False
    monkeypatch.undo()
    a.verify()  # still A's
    assert not c.held
    assert holder_of(tmp_path)["token"] == a.token
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_LOCK_NAME]


def breaker_of(state: Path, number: int) -> Path:
    """The breaker with `number` of the lock file now in `state`."""
    seen = StateLock(state).read(lock_file(state))
    assert seen is not None
    return state / f".{STATE_LOCK_NAME}.breaking.{seen.key()}.{number}"


def test_a_breaker_left_by_a_contender_that_died_holds_takeovers_only_for_the_grace(
    tmp_path: Path,
) -> None:
    put(tmp_path, "", age=120)
    left = breaker_of(tmp_path, 0)
    os.link(lock_file(tmp_path), left)  # a contender died while moving the stale lock
    with pytest.raises(Busy):
        StateLock(tmp_path).acquire()  # fresh: another one may be moving it right now
    assert left.exists()
    waited = StateLock(tmp_path, grace=0.0)  # as if the grace had passed
    waited.acquire()  # with the next breaker, which it removes with the one left
    assert holder_of(tmp_path)["token"] == waited.token
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_LOCK_NAME]
    waited.release()
    assert list(tmp_path.iterdir()) == []


def test_no_contender_removes_the_breaker_of_another(tmp_path: Path) -> None:
    """A breaker left by a contender that died, and the next one, made a moment ago by a
    contender now moving the stale lock: a third contender leaves both alone and does not
    take the lock over (removing a live breaker would let a fourth one move the lock at
    once, and one of them the new holder's lock)."""
    put(tmp_path, "", age=120)
    os.link(lock_file(tmp_path), breaker_of(tmp_path, 0))
    time.sleep(0.3)
    live = breaker_of(tmp_path, 1)
    os.link(lock_file(tmp_path), live)  # its maker is moving the stale lock right now
    third = StateLock(tmp_path, grace=0.2)
    with pytest.raises(Busy):
        third.acquire()
    assert breaker_of(tmp_path, 0).exists() and live.exists()
    assert lock_file(tmp_path).read_text() == ""  # the stale lock, still in place
    live.unlink()  # its maker found the lock was not stale after all, say
    time.sleep(0.3)
    third.acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_LOCK_NAME]


def test_two_contenders_past_a_left_breaker_never_remove_the_next_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Y finds the breaker left by a contender that died; before Y goes on, Z (which found
    it too) makes the next one and starts moving the stale lock. Y must neither remove Z's
    breaker nor move the lock: it gives way."""
    put(tmp_path, "", age=120)
    os.link(lock_file(tmp_path), breaker_of(tmp_path, 0))
    time.sleep(0.3)
    z_breaker = breaker_of(tmp_path, 1)
    y = StateLock(tmp_path, grace=0.2)
    real = lock_takeover._abandoned
    judged: list[tuple[str, bool]] = []

    def abandoned(lock: StateLock, breaker: Path) -> bool:
        found = real(lock, breaker)
        judged.append((breaker.name[-2:], found))
        if found and not z_breaker.exists():
            os.link(lock_file(tmp_path), z_breaker)  # Z, a moment ahead of Y
        return found

    monkeypatch.setattr(lock_takeover, "_abandoned", abandoned)
    with pytest.raises(Busy):
        y.acquire()
    monkeypatch.undo()
    assert judged[:2] == [(".0", True), (".1", False)]
    assert z_breaker.exists() and breaker_of(tmp_path, 0).exists()
    assert lock_file(tmp_path).read_text() == ""  # the stale lock, left for Z to move


class _OtherNode(StateLock):
    """A contender on another login node: its NFS or Lustre client numbers the mount (st_dev)
    itself."""

    def read(self, path: Path) -> Any:
        seen = super().read(path)
        return None if seen is None else dataclasses.replace(seen, dev=seen.dev + 1)


def test_contenders_on_two_nodes_use_the_same_breaker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B (another node) holds the stale lock's breaker and is about to move it: A, here, must
    not move it too (A would then create its lock, B move that aside, and a third one take
    the empty place: two holders)."""
    put(tmp_path, "", age=120)
    a, b = StateLock(tmp_path), _OtherNode(tmp_path)
    real = lock_takeover._move_aside
    tried: list[bool] = []

    def move_aside(lock: StateLock, stale: Any) -> bool:
        if lock is b:
            with contextlib.suppress(Busy):
                a.acquire()
            tried.append(a.held)
        return real(lock, stale)

    monkeypatch.setattr(lock_takeover, "_move_aside", move_aside)
    b.acquire()
    monkeypatch.undo()
    assert tried == [False]  # A gave way while B held the breaker
    b.verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_LOCK_NAME]


def test_a_node_whose_clock_is_ahead_leaves_a_live_breaker_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A breaker made a moment ago; a contender whose clock is 90 s ahead of the file
    server's (login nodes may be minutes apart) judges it by the file system's clock."""
    put(tmp_path, "", age=120)
    live = breaker_of(tmp_path, 0)
    os.link(lock_file(tmp_path), live)  # its maker is about to move the stale lock
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 90)
    ahead = StateLock(tmp_path)
    with pytest.raises(Busy):
        ahead.acquire()
    monkeypatch.undo()
    assert live.exists() and lock_file(tmp_path).read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_LOCK_NAME, live.name])


def clock_after(monkeypatch: pytest.MonkeyPatch, newest: Path, seconds: float) -> None:
    """The file system's clock, as the lock's cleanup reads it, `seconds` after `newest` was
    last changed: a file's age is then fixed whatever the test's own writes and syncs cost."""
    now = os.lstat(newest).st_ctime + seconds
    monkeypatch.setattr(lock_takeover, "file_system_now", lambda lock: now)


def test_a_holder_removes_breakers_left_behind_once_still_for_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breakers of stale locks that are gone (their makers died after the move, or before it
    while the stale lock was later released), and a clock probe left by a killed contender,
    once still for the grace; one made a moment ago stays."""
    put(tmp_path, "", age=120)
    for name in ("breaking.0123456789abcdef01234567.0", "breaking", "now.deadbeef"):
        (tmp_path / f".{STATE_LOCK_NAME}.{name}").write_text("")
    time.sleep(0.3)
    fresh = tmp_path / f".{STATE_LOCK_NAME}.breaking.fedcba9876543210fedcba98.0"
    fresh.write_text("")
    clock_after(monkeypatch, fresh, 0.1)
    lock = StateLock(tmp_path, grace=0.2)
    lock.acquire()  # takes the stale lock over
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_LOCK_NAME, fresh.name])
    lock.release()


def test_a_holder_past_its_lease_does_not_renew_it(tmp_path: Path) -> None:
    """Suspended past its lease (a laptop's lid, a stopped process): a contender may be
    taking the lock over, so renewing would overwrite what it makes."""
    lock = StateLock(tmp_path, lease=0.2)
    lock.acquire()
    time.sleep(0.3)
    with pytest.raises(LockLost, match="lease ran out"):
        lock.refresh()
    assert not lock.held


def test_a_link_retried_after_it_succeeded_is_ours_with_a_breaker_linked_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFSv2/3 may answer a retried link() EEXIST although its first try made the link; a
    contender's breaker may link the new lock meanwhile (three links to its file)."""
    real_link = os.link

    def link_then_exists(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == STATE_LOCK_NAME:
            real_link(src, dst)
            real_link(dst, tmp_path / f".{STATE_LOCK_NAME}.breaking.x.0")
            raise FileExistsError(errno.EEXIST, "File exists")
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link_then_exists)
    lock = StateLock(tmp_path)
    lock.acquire()
    monkeypatch.undo()
    assert lock.held and holder_of(tmp_path)["token"] == lock.token


def test_a_node_whose_clock_is_ahead_waits_out_a_damaged_lock_by_the_file_systems_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(tmp_path, "")  # written a moment ago (an older oellm between create and write, say)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 90)
    with pytest.raises(Busy):
        StateLock(tmp_path).acquire()
    monkeypatch.undo()
    assert lock_file(tmp_path).read_text() == ""


@pytest.mark.parametrize("refuses", ["link", "rename"])
@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_a_release_the_state_dir_refuses_leaves_the_lock_to_its_lease(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    refuses: str,
    error: int,
) -> None:
    """Made read-only (or full) while held: the release runs on the way out, often with the
    error that tells why, which it must not replace with its own. Refused at its first step
    (the breaker's link) or at moving the lock aside."""
    lock = StateLock(tmp_path)
    lock.acquire()
    real = getattr(os, refuses)

    def refused(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if STATE_LOCK_NAME in (Path(src).name, Path(dst).name):
            raise OSError(error, os.strerror(error))
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, refuses, refused)
    lock.release()
    monkeypatch.undo()
    assert not lock.held
    assert holder_of(tmp_path)["token"] == lock.token  # runs out its lease
    assert "left to run out its lease" in caplog.text
    assert "cannot release the state lock" in caplog.text or refuses == "rename"


def test_the_holder_after_a_takeover_removes_files_of_killed_contenders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contender killed while writing its lock, moving a stale one aside or releasing
    leaves a file; once still for the grace, the next holder removes it."""
    put(tmp_path, "", age=120)
    names = ["a1b2.4242.tmp", "stale.c3d4", "release.e5f6"]
    for name in names:
        (tmp_path / f".{STATE_LOCK_NAME}.{name}").write_text("")
    time.sleep(0.3)
    fresh = tmp_path / f".{STATE_LOCK_NAME}.f7a8.4343.tmp"  # a live contender's, a moment old
    fresh.write_text("")
    clock_after(monkeypatch, fresh, 0.1)
    lock = StateLock(tmp_path, grace=0.2)
    lock.acquire()  # takes the stale lock over
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_LOCK_NAME, fresh.name])
    lock.release()


def test_every_holder_removes_what_killed_contenders_left_and_no_live_ones_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No takeover needed: taking a free lock clears what contenders killed long ago left
    (a state dir whose lock is never stale would keep them for good). A breaker linked a
    moment ago to a lock judged stale, a live contender's, stays: the holder may be past
    its lease, and that contender about to move its lock aside."""
    names = ["breaking.0123456789abcdef01234567.0", "now.dead", "a1b2.4242.tmp", "stale.c3d4"]
    for name in names:
        (tmp_path / f".{STATE_LOCK_NAME}.{name}").write_text("")
    time.sleep(0.3)
    judged = tmp_path / "judged-stale"  # the lock file a live contender judged stale
    judged.write_text("")
    live = [tmp_path / f".{STATE_LOCK_NAME}.breaking.fedcba9876543210fedcba98.0"]
    os.link(judged, live[0])
    judged.unlink()
    live.append(tmp_path / f".{STATE_LOCK_NAME}.f7a8.4343.tmp")
    live[1].write_text("")
    clock_after(monkeypatch, live[1], 0.1)
    (tmp_path / "jobs").mkdir()  # the state dir's own files are not the lock's
    lock = StateLock(tmp_path, grace=0.2)
    lock.acquire()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([STATE_LOCK_NAME, "jobs", *(p.name for p in live)])
    lock.release()


def test_a_file_moved_aside_that_vanishes_costs_the_try_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a rename keeps a file's change time, a holder's cleanup may take a file just
    moved aside (a stale lock, or the lock being released) for a killed contender's and
    remove it: the takeover is given up (Busy, the next try finds the name free), the
    release is done."""
    real_rename = os.rename

    def rename_then_cleaned(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_rename(src, dst, *args, **kwargs)
        if ".stale." in Path(dst).name:
            os.unlink(dst)

    put(tmp_path, "", age=120)
    monkeypatch.setattr(os, "rename", rename_then_cleaned)
    with pytest.raises(Busy):
        StateLock(tmp_path).acquire()
    lock = StateLock(tmp_path)
    lock.acquire()
    lock.release()
    monkeypatch.undo()
    assert not lock.held and list(tmp_path.iterdir()) == []


def test_a_contender_whose_temporary_lock_vanished_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped for longer than the grace between writing its lock aside and linking it, a
    contender finds that file removed as a killed contender's: it writes it again."""
    real_link = os.link
    vanished: list[str] = []

    def link_after_cleanup(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == STATE_LOCK_NAME and not vanished:
            vanished.append(str(src))
            os.unlink(src)
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link_after_cleanup)
    lock = StateLock(tmp_path)
    lock.acquire()
    monkeypatch.undo()
    assert vanished and lock.held and holder_of(tmp_path)["token"] == lock.token
    lock.release()


def test_a_release_leaves_the_lock_to_a_contender_moving_it_aside(tmp_path: Path) -> None:
    """A contender that judged the lock stale (the holder stopped past its lease, or the
    contender's clock ahead) holds its breaker: the holder's release leaves the lock to it
    rather than free the name under it."""
    lock = StateLock(tmp_path)
    lock.acquire()
    breaker = breaker_of(tmp_path, 0)
    os.link(lock_file(tmp_path), breaker)  # the contender, about to move the lock aside
    lock.release()
    assert not lock.held
    assert holder_of(tmp_path)["token"] == lock.token and breaker.exists()


def test_a_release_past_the_lease_with_no_contender_removes_the_lock(tmp_path: Path) -> None:
    lock = StateLock(tmp_path, lease=0.2)
    lock.acquire()
    time.sleep(0.3)
    lock.release()
    assert not lock.held and list(tmp_path.iterdir()) == []


class _Ahead(StateLock):
    """A contender on a login node whose clock runs `ahead` seconds before this one's."""

    ahead = 0.0

    def _stale(self, seen: Any, now: float) -> bool:
        return super()._stale(seen, now + self.ahead)


def test_a_release_racing_a_contender_whose_clock_is_ahead_leaves_one_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H releases within its lease by its own clock; C, whose clock is ahead, judged the lock
    stale and has linked its breaker. H's release and D's acquire run right then, and E's
    acquire runs once C has moved what was at the lock's name aside: at most one of C, D
    and E holds the lock, and it is the one the lock file names."""
    holder = StateLock(tmp_path, lease=1.0)
    holder.acquire()
    time.sleep(0.3)  # 0.7 s of its lease left
    monkeypatch.setattr(lock_module, "RELEASE_PATIENCE_SECONDS", 0.1)
    mover = _Ahead(tmp_path)
    mover.ahead = 2.0
    late, later = StateLock(tmp_path), StateLock(tmp_path)
    read = mover.read

    def interleaved(path: Path) -> Any:
        if ".breaking." in path.name:
            holder.release()
            with contextlib.suppress(Busy):
                late.acquire()
        if ".stale." in path.name:
            with contextlib.suppress(Busy):
                later.acquire()
        return read(path)

    mover.read = interleaved  # type: ignore[method-assign]
    with contextlib.suppress(Busy):
        mover.acquire()
    assert not holder.held, "the interleaving ran"
    holders = [lock for lock in (holder, mover, late, later) if lock.held]
    assert len(holders) <= 1, [lock.token for lock in holders]
    for lock in holders:
        lock.verify()  # the lock file names it


def test_a_release_past_a_breaker_left_by_a_dead_contender_removes_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contender linked breaker 0 to this lock and died long ago: the release takes the
    next number, removes the lock and the breaker left."""
    lock = StateLock(tmp_path)
    lock.acquire()
    left = breaker_of(tmp_path, 0)
    os.link(lock_file(tmp_path), left)
    clock_after(monkeypatch, left, lock.grace + 60)
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_a_release_waits_a_moment_for_a_contender_holding_the_breaker_then_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A contender that took the lock for stale linked the breaker and was killed before it
    moved the lock: the release waits for it a moment, then leaves the lock to its lease
    with a warning (never removes it under the breaker)."""
    monkeypatch.setattr(lock_module, "RELEASE_PATIENCE_SECONDS", 0.3)
    lock = StateLock(tmp_path)
    lock.acquire()
    os.link(lock_file(tmp_path), breaker_of(tmp_path, 0))
    start = time.monotonic()
    lock.release()
    assert time.monotonic() - start >= 0.3
    assert holder_of(tmp_path)["token"] == lock.token
    assert "holds its breaker" in caplog.text


def test_a_release_ends_as_soon_as_the_contender_holding_the_breaker_moved_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock = StateLock(tmp_path)
    lock.acquire()
    breaker = breaker_of(tmp_path, 0)
    os.link(lock_file(tmp_path), breaker)
    mover = threading.Timer(0.2, lambda: (lock_file(tmp_path).unlink(), breaker.unlink()))
    mover.start()
    lock.release()
    mover.join()
    assert "holds its breaker" not in caplog.text and list(tmp_path.iterdir()) == []
