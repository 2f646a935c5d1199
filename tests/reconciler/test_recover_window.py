"""A job recovered from SLURM (its records gone) is recorded as submitted when SLURM first
reports it, not at the round's stamp: later rounds ask accounting from the attempt's intent on
(`observe`, minus LOOKBACK_MARGIN), and a job that ended before that window would never be seen
again and be counted LOST after UNSEEN_LIMIT rounds, though it completed.

The rounds run against the real `SlurmScheduler` with a fake at the subprocess boundary that
answers as sacct does: `-S` lists only jobs in a listed state at or after that moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from oellm.reconciler import tags
from oellm.reconciler.act import act
from oellm.reconciler.actions import Recover
from oellm.reconciler.bundle import Bundle, load_bundle
from oellm.reconciler.decide import decide
from oellm.reconciler.model import History, Observation
from oellm.reconciler.observe import tags_of
from oellm.reconciler.reconcile import reconcile_once
from oellm.reconciler.records import Records
from oellm.reconciler.recover import index_tags
from oellm.reconciler.schedulers import SchedulerJob, row_time
from oellm.reconciler.schedulers.slurm import SlurmScheduler, sacct_time
from oellm.reconciler.schedulers.slurm_parse import parse_sacct
from oellm.reconciler.session import Session
from oellm.shell import Completed
from tests.reconciler.slurm_helpers import compile_to
from tests.reconciler.test_decide import lock_job
from tests.reconciler.test_slurm_parsers import sacct_stdout

ONE = """
project: {name: window}
job: {name: demo}
backend: {bash: {command: "echo hello"}}
"""

CHAIN = """
project: {name: window_chain}
job: {name: demo, chain_repeat: 2}
backend: {bash: {command: "echo hello"}}
"""


@dataclass(frozen=True)
class Ended:
    """A job SLURM ran and ended: its accounting row."""

    job_id: str
    name: str  # the SLURM job name
    state: str
    start: datetime
    end: datetime

    def row(self) -> str:
        return (
            f"{self.job_id}|{self.name}|{self.state}|0:0|{sacct_time(self.start)}"
            f"|{sacct_time(self.end)}|vm\n"
        )


@dataclass
class Accounting:
    """squeue and sacct at the subprocess boundary: squeue has forgotten every job (they
    ended long before MinJobAge), sacct lists a job only if it ended at or after `-S`."""

    jobs: Sequence[Ended]
    windows: list[datetime] = field(default_factory=list)
    submitted: list[list[str]] = field(default_factory=list)

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        program = argv[0]
        if program == "sacct":
            since = datetime.fromisoformat(argv[list(argv).index("-S") + 1]).astimezone()
            self.windows.append(since)
            listed = "".join(job.row() for job in self.jobs if job.end >= since)
            return Completed(tuple(argv), 0, listed, "")
        if program == "sbatch":
            self.submitted.append(list(argv))
            return Completed(tuple(argv), 0, "999\n", "")
        return Completed(tuple(argv), 0, "", "")


def session_with(bundle: Path, fake: Accounting) -> Session:
    session = Session(bundle, "slurm")
    session.scheduler = SlurmScheduler(run=fake, user="me")
    return session


def test_a_job_that_completed_long_before_it_is_recovered_ends_completed(
    tmp_path: Path,
) -> None:
    bundle = compile_to(tmp_path, ONE)
    key = Session(bundle, "slurm").key
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    tag = tags.attempt_tag(key, "demo", 1)
    fake = Accounting([Ended("36439", tags.job_name(tag), "COMPLETED", an_hour_ago, an_hour_ago)])
    said: list[str] = []
    for _ in range(5):
        reconcile_once(session_with(bundle, fake), False, said.append)
    assert any("recovered demo attempt 1" in line for line in said), said
    assert fake.submitted == [], "a recovered job is never submitted again"
    (attempt,) = Session(bundle, "slurm").records.load().attempts["demo"]
    assert (attempt.phase, attempt.final_state, attempt.job_id) == (
        "finished",
        "COMPLETED",
        "36439",
    )
    # Recorded when SLURM started it, so the round after the recovery asked from then on
    # (the first asked back to the lookback horizon, before it would submit).
    assert datetime.fromisoformat(attempt.intent_at) == an_hour_ago.replace(microsecond=0)
    assert len(fake.windows) == 2 and fake.windows[1] <= an_hour_ago


def test_a_recovered_chain_is_recorded_from_its_earliest_link(tmp_path: Path) -> None:
    bundle = load(tmp_path, CHAIN)
    records = Records(tmp_path / "state")
    stamp = datetime.now(timezone.utc).replace(microsecond=0)
    first = (stamp - timedelta(hours=2)).isoformat()
    second = (stamp - timedelta(hours=1)).isoformat()
    recover = Recover(
        "demo",
        "found in SLURM",
        attempt=1,
        job_id="30",
        found=((1, "oellm.k.demo.1", "30", first), (2, "oellm.k.demo.1.link2", "31", second)),
    )
    act([recover], bundle, records.load(), records, SlurmScheduler(run=Accounting([])), "k",
        lambda: stamp, lambda line: None)  # fmt: skip
    (attempt,) = records.load().attempts["demo"]
    assert (attempt.intent_at, attempt.submitted_at) == (first, first)
    assert [(link.job_id, link.intent_at, link.submitted_at) for link in attempt.links] == [
        ("30", first, first),
        ("31", second, second),
    ]


def test_a_job_slurm_gives_no_time_for_or_a_later_one_is_recorded_at_the_round(
    tmp_path: Path,
) -> None:
    """A queued job (no start, no end) is live: the round's stamp keeps it in the window. A
    time after the stamp (the controller's clock ahead of this one) is not written."""
    bundle = load(tmp_path, CHAIN)
    records = Records(tmp_path / "state")
    stamp = datetime.now(timezone.utc).replace(microsecond=0)
    ahead = (stamp + timedelta(seconds=30)).isoformat()
    recover = Recover(
        "demo",
        "found in SLURM",
        attempt=1,
        job_id="30",
        found=((1, "oellm.k.demo.1", "30", ahead), (2, "oellm.k.demo.1.link2", "31", None)),
    )
    act([recover], bundle, records.load(), records, SlurmScheduler(run=Accounting([])), "k",
        lambda: stamp, lambda line: None)  # fmt: skip
    (attempt,) = records.load().attempts["demo"]
    assert attempt.intent_at == stamp.isoformat()
    assert {link.intent_at for link in attempt.links} == {stamp.isoformat()}


def test_since_is_the_start_or_the_end_of_a_job_that_never_started() -> None:
    rows = {job.job_id: job for job in parse_sacct(sacct_stdout("sacct_finished_with_states.txt"))}
    # TIMEOUT: started 12:26:49, ended 87 s later; held and cancelled: no start, only its end.
    assert rows["1"].since == row_time("2026-11-26T12:26:49")
    assert rows["6"].start is None
    assert rows["6"].since == row_time("2026-11-26T12:26:52")
    assert SchedulerJob("7", "oellm.k.demo.1", "PENDING").since is None


def test_row_time_reads_local_times_and_keeps_zones() -> None:
    local = datetime(2026, 11, 26, 12, 26, 49)
    assert row_time("2026-11-26T12:26:49") == local.astimezone(timezone.utc)
    assert row_time("2026-11-26T12:26:49+00:00") == datetime(
        2026, 11, 26, 12, 26, 49, tzinfo=timezone.utc
    )
    assert row_time(None) is None
    assert row_time("Unknown") is None


def test_decide_recovers_with_the_time_slurm_reports_for_each_job() -> None:
    """A chain whose link 1 ended (start and end known) and whose link 2 is queued (no time)."""
    rows = [
        SchedulerJob("30", "oellm.0a1b2c3d.demo.1", "COMPLETED", start="2026-11-26T09:00:00",
                     end="2026-11-26T09:05:00", source="accounting"),
        SchedulerJob("31", "oellm.0a1b2c3d.demo.1.link2", "PENDING"),
    ]  # fmt: skip
    obs = Observation(
        asked=True,
        available=True,
        by_id={r.job_id: r for r in rows},
        by_tag=tags_of(rows),
        submissions=index_tags(rows, "oellm.0a1b2c3d."),
        looked_back=True,
    )
    history = History(attempts={}, dropped={})
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    (action,) = decide([lock_job({"name": "demo", "chain_repeat": 2})], history, obs, now)
    assert isinstance(action, Recover), action
    started = row_time("2026-11-26T09:00:00")
    assert started is not None
    assert action.found == (
        (1, "oellm.0a1b2c3d.demo.1", "30", started.isoformat()),
        (2, "oellm.0a1b2c3d.demo.1.link2", "31", None),
    )


def load(tmp_path: Path, text: str) -> Bundle:
    return load_bundle(compile_to(tmp_path, text))
