"""The round's sacct started early (reconciler/prefetch.py, schedulers/early.py): taken only for
the very same command line asked recently, asked anew otherwise; the moment it asks from kept
in the state dir by the round before. Fakes at the subprocess boundary only."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from oellm.reconciler import prefetch
from oellm.reconciler.cancel import cancel_jobs
from oellm.reconciler.errors import SchedulerError
from oellm.reconciler.lock_file import STATE_LOCK_NAME
from oellm.reconciler.model import History
from oellm.reconciler.observe import LOOKBACK_MARGIN
from oellm.reconciler.reconcile import reconcile_once
from oellm.reconciler.schedulers import SchedulerJob, early, slurm
from oellm.reconciler.schedulers.slurm import SlurmScheduler, sacct_argv
from oellm.reconciler.session import Session
from oellm.shell import Completed
from tests.reconciler.slurm_helpers import compile_to

SINCE = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
LATER = SINCE + timedelta(hours=1)


class Slurm:
    """A fake `shell.run`: sbatch answers increasing job ids, squeue lists the jobs submitted
    as pending, sacct answers one finished row named after its `-S`, so that a test tells
    which question an answer came from. Every call is kept, in order."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.names: list[str] = []
        self.lock = threading.Lock()

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        with self.lock:
            self.calls.append(list(argv))
        if argv[0] == "sbatch":
            self.names.append(next(a for a in argv if a.startswith("--job-name=")).split("=")[1])
            return Completed(tuple(argv), 0, f"{1000 + len(self.names)}\n", "")
        if argv[0] == "squeue":
            rows = [
                f"{1000 + n}|{name}|PENDING|None|(null)\n" for n, name in enumerate(self.names, 1)
            ]
            return Completed(tuple(argv), 0, "".join(rows), "")
        start = argv[argv.index("-S") + 1]
        row = f"7|oellm.from.{start}|COMPLETED|0:0|{start}|{start}|vm\n"
        return Completed(tuple(argv), 0, row, "")

    def sacct(self) -> list[str]:
        return [argv[argv.index("-S") + 1] for argv in self.calls if argv[0] == "sacct"]


def answered_from(jobs: Sequence[SchedulerJob]) -> list[str]:
    return [job.name.removeprefix("oellm.from.") for job in jobs if job.job_id == "7"]


def test_a_query_takes_the_early_answer_to_its_own_question_once() -> None:
    fake = Slurm()
    scheduler = SlurmScheduler(run=fake, user="alice")
    scheduler.prefetch(SINCE)
    first = scheduler.query("oellm.", SINCE)
    assert fake.sacct() == [slurm.sacct_time(SINCE)], "sacct was asked once, early"
    assert answered_from(first) == [slurm.sacct_time(SINCE)]
    # Used once: the next query asks again.
    scheduler.query("oellm.", SINCE)
    assert fake.sacct() == [slurm.sacct_time(SINCE)] * 2


def test_a_query_asking_another_question_asks_it_anew() -> None:
    fake = Slurm()
    scheduler = SlurmScheduler(run=fake, user="alice")
    scheduler.prefetch(SINCE)
    jobs = scheduler.query("oellm.", LATER)
    assert sorted(fake.sacct()) == sorted([slurm.sacct_time(SINCE), slurm.sacct_time(LATER)])
    assert answered_from(jobs) == [slurm.sacct_time(LATER)]
    # A query that asks no sacct at all drops the early one too.
    scheduler.prefetch(SINCE)
    assert answered_from(scheduler.query("oellm.", None)) == []
    scheduler.query("oellm.", SINCE)
    assert fake.sacct().count(slurm.sacct_time(SINCE)) == 3


def test_an_early_answer_too_old_is_asked_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early, "MAX_AGE_S", -1.0)
    fake = Slurm()
    scheduler = SlurmScheduler(run=fake, user="alice")
    scheduler.prefetch(SINCE)
    assert answered_from(scheduler.query("oellm.", SINCE)) == [slurm.sacct_time(SINCE)]
    assert fake.sacct() == [slurm.sacct_time(SINCE)] * 2


def test_a_dropped_early_answer_is_not_used() -> None:
    fake = Slurm()
    scheduler = SlurmScheduler(run=fake, user="alice")
    scheduler.prefetch(SINCE)
    scheduler.discard_prefetch()
    scheduler.query("oellm.", SINCE)
    assert len(fake.sacct()) == 2


def test_early_query_matches_the_whole_command_line() -> None:
    asked = EarlyQueryClock()
    query = early.EarlyQuery(["sacct", "-S", "a"], lambda: 1, clock=asked)
    assert query.answers(["sacct", "-S", "a"])
    assert not query.answers(["sacct", "-S", "b"])
    assert not query.answers(["sacct", "-S", "a", "-u", "bob"])
    asked.now += early.MAX_AGE_S + 0.1
    assert not query.answers(["sacct", "-S", "a"])
    assert query.future.result() == 1


class EarlyQueryClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_moment_is_kept_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / prefetch.SINCE_NAME
    assert prefetch.read_since(tmp_path) is None
    prefetch.remember_since(tmp_path, None)
    assert not path.exists()
    prefetch.remember_since(tmp_path, SINCE)
    assert prefetch.read_since(tmp_path) == SINCE
    kept = path.stat()
    prefetch.remember_since(tmp_path, SINCE.astimezone(timezone(timedelta(hours=2))))
    assert path.stat().st_ino == kept.st_ino, "the same moment is not written again"
    prefetch.remember_since(tmp_path, LATER)
    assert prefetch.read_since(tmp_path) == LATER
    prefetch.remember_since(tmp_path, None)
    assert not path.exists()
    for damaged in ("", "yesterday", "2026-11-26T12:00:00"):  # no zone: not ours
        path.write_text(damaged)
        assert prefetch.read_since(tmp_path) is None


TWO = """
project: {name: early}
job: {name: "e_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "echo ${vars.i}"}}
sweep:
  params: {vars.i: [0, 1]}
"""


def test_rounds_keep_the_moment_and_the_next_one_asks_it_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round keeps the `-S` its sacct asked for the attempts in flight; the next round
    starts that sacct when it starts (before the bundle and the records are read) and asks it
    no second time."""
    fake = Slurm()
    order: list[str] = []

    class FakeSlurmScheduler(SlurmScheduler):
        def __init__(self) -> None:
            super().__init__(run=fake)

        def prefetch(self, since: datetime) -> None:
            order.append(f"sacct -S {slurm.sacct_time(since)}")
            super().prefetch(since)

    monkeypatch.setattr(slurm, "SlurmScheduler", FakeSlurmScheduler)
    real_history = Session.history

    def history(self: Session, read_completed: bool = True) -> History:
        order.append("records read")
        return real_history(self, read_completed)

    monkeypatch.setattr(Session, "history", history)
    bundle = compile_to(tmp_path, TWO)

    def round_() -> Session:
        order.clear()
        session = Session(bundle, "slurm", early=True)
        try:
            reconcile_once(session, False, lambda line: None)
        finally:
            session.close()
        return session

    session = round_()  # submits both: nothing was in flight, nothing is kept
    state = session.bundle.state_path
    assert len(fake.names) == 2 and prefetch.read_since(state) is None
    round_()  # asks sacct for the two in flight, and keeps from when
    assert order == ["records read"]
    in_flight = session.records.load().in_flight()
    since = min(datetime.fromisoformat(a.intent_at) for a in in_flight) - LOOKBACK_MARGIN
    assert prefetch.read_since(state) == since
    asked = len(fake.calls)
    round_()
    assert order == [f"sacct -S {slurm.sacct_time(since)}", "records read"]
    assert [argv[0] for argv in fake.calls[asked:]] == ["sacct", "squeue"], "sacct asked once"
    assert fake.calls[asked] == sacct_argv(since)


def test_a_round_runs_without_garbage_collections_and_leaves_them_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`oellm reconcile` runs one round without the garbage collector (a round keeps what it
    allocates), and `--wait` with rarer collections; either leaves the collector as it was:
    tests run many commands in one process."""
    from oellm import reconcile_cli
    from oellm.cli import main
    from oellm.reconciler import reconcile

    bundle = compile_to(tmp_path, TWO)
    seen: list[tuple[bool, tuple[int, int, int]]] = []
    real_round = reconcile.reconcile_once

    def round_(*args: object, **kwargs: object) -> object:
        seen.append((gc.isenabled(), gc.get_threshold()))
        return real_round(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reconcile, "reconcile_once", round_)
    before = gc.get_threshold()
    assert gc.isenabled() and before[0] < reconcile_cli.ROUND_GC_THRESHOLD[0]
    local = ["--scheduler", "local"]
    assert main(["reconcile", str(bundle), *local]) == 1
    assert seen == [(False, before)]
    assert gc.isenabled() and gc.get_threshold() == before
    seen.clear()
    assert main(["reconcile", str(bundle), *local, "--wait", "--interval", "0.2"]) == 0
    assert seen and set(seen) == {(True, reconcile_cli.ROUND_GC_THRESHOLD)}
    assert gc.isenabled() and gc.get_threshold() == before


def test_a_fifo_in_place_of_the_moment_is_no_moment(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / prefetch.SINCE_NAME)
    assert prefetch.read_since(tmp_path) is None  # without hanging


def squeue_calls(fake: Slurm) -> int:
    return sum(1 for argv in fake.calls if argv[0] == "squeue")


def test_a_query_takes_the_early_squeue_once() -> None:
    fake = Slurm()
    scheduler = SlurmScheduler(run=fake, user="alice")
    scheduler.prefetch_queue()
    scheduler.query("oellm.", None)
    assert squeue_calls(fake) == 1, "squeue was asked once, early"
    scheduler.query("oellm.", None)
    assert squeue_calls(fake) == 2, "used once: the next query asks again"


def test_an_early_squeue_too_old_or_dropped_is_asked_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Slurm()
    scheduler = SlurmScheduler(run=fake, user="alice")
    scheduler.prefetch_queue()
    scheduler.discard_prefetch()
    scheduler.query("oellm.", None)
    assert squeue_calls(fake) == 2
    monkeypatch.setattr(early, "MAX_AGE_S", -1.0)
    scheduler.prefetch_queue()
    scheduler.query("oellm.", None)
    assert squeue_calls(fake) == 4


def test_an_early_squeue_that_failed_fails_the_query_as_a_late_one_would() -> None:
    def down(
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        return Completed(tuple(argv), 1, "", "slurm_load_jobs error: Unable to contact slurm")

    late = SlurmScheduler(run=down, user="alice")
    with pytest.raises(SchedulerError) as asked_late:
        late.query("oellm.", None)
    scheduler = SlurmScheduler(run=down, user="alice")
    scheduler.prefetch_queue()
    with pytest.raises(SchedulerError) as asked_early:
        scheduler.query("oellm.", None)
    assert type(asked_early.value) is type(asked_late.value)
    assert str(asked_early.value) == str(asked_late.value)
    assert "Unable to contact slurm" in str(asked_early.value)


def test_a_round_asks_squeue_once_holding_the_lock_before_it_reads_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """squeue is started once the round holds the state lock (what it sees is what a round
    asking after the records would see: nothing else writes them meanwhile), before the
    records are read, and asked no second time."""
    order: list[str] = []
    inner = Slurm()

    def fake(
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        if argv[0] == "squeue":
            held = (state / STATE_LOCK_NAME).exists()
            order.append("squeue, lock held" if held else "squeue, no lock")
        return inner(argv, timeout, cwd, env)

    class FakeSlurmScheduler(SlurmScheduler):
        def __init__(self) -> None:
            super().__init__(run=fake)

    monkeypatch.setattr(slurm, "SlurmScheduler", FakeSlurmScheduler)
    real_history = Session.history

    def history(self: Session, read_completed: bool = True) -> History:
        # Let the early squeue answer first, if it was started: the order is then its own.
        time.sleep(0.2)
        order.append("records read")
        return real_history(self, read_completed)

    monkeypatch.setattr(Session, "history", history)
    bundle = compile_to(tmp_path, TWO)
    for _ in range(3):  # submits both; then finds them queued, twice
        session = Session(bundle, "slurm", early=True)
        state = session.bundle.state_path
        try:
            reconcile_once(session, False, lambda line: None)
        finally:
            session.close()
    assert len(inner.names) == 2, "submitted once each"
    # The first round had nothing in flight before it, nor had the second's round before it
    # (the moment a round keeps is of what was in flight when it read the records): they ask
    # squeue only when they must. The third starts it early.
    assert order == [
        *["records read", "squeue, lock held"] * 2,
        *["squeue, lock held", "records read"],
    ]


def test_a_round_with_nothing_in_flight_and_nothing_to_do_asks_slurm_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Slurm()

    class FakeSlurmScheduler(SlurmScheduler):
        def __init__(self) -> None:
            super().__init__(run=fake)

    monkeypatch.setattr(slurm, "SlurmScheduler", FakeSlurmScheduler)
    bundle = compile_to(tmp_path, TWO)
    session = Session(bundle, "slurm", early=True)
    try:
        cancel_jobs(session, ["e_0", "e_1"], lambda line: None)  # never submitted: dropped
    finally:
        session.close()
    fake.calls.clear()
    for _ in range(2):
        session = Session(bundle, "slurm", early=True)
        try:
            report = reconcile_once(session, False, lambda line: None)
        finally:
            session.close()
        assert report.finished
    assert fake.calls == []
