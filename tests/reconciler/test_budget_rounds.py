"""Budgets over whole rounds: the local scheduler for the count budget, and a slow fake sbatch
(at the subprocess boundary) for the time budget and for the lease a long round renews."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from oellm.cli import main
from oellm.reconcile_json import document
from oellm.reconciler.budget import Budget
from oellm.reconciler.lock import Busy, StateLock
from oellm.reconciler.lock_file import STATE_LOCK_NAME
from oellm.reconciler.reconcile import reconcile_once
from oellm.reconciler.schedulers.slurm import SlurmScheduler
from oellm.reconciler.session import Session
from oellm.shell import Completed
from tests.helpers import REPO
from tests.reconciler.slurm_helpers import compile_to

TWELVE = """
project: {name: many}
job: {name: "m_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "echo ${vars.i}"}}
sweep:
  params: {vars.i: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}
"""
NAMES = [f"m_{i}" for i in range(12)]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def attempts(bundle: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int | None]:
    code, out, _ = run(["status", str(bundle), "--json", "--scheduler", "local"], capsys)
    assert code == 0
    return {row["job"]: row["attempt"] for row in json.loads(out)["bundles"][0]["jobs"]}


def test_twelve_jobs_with_max_submit_five_go_in_three_rounds_once_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = compile_to(tmp_path, TWELVE)
    local = ["--scheduler", "local", "--max-submit", "5"]
    code, out, _ = run(["reconcile", str(bundle), "--dry-run", *local], capsys)
    assert code == 0
    assert "m_5: no action: ready; waits for the next round (count budget 5 reached" in out
    assert out.splitlines()[-1] == (
        "submitted 5 of 12 ready jobs; the rest go in the next round (count budget 5)"
    )
    seen: list[dict[str, int | None]] = []
    for expected in ("submitted 5 of 12 ready", "submitted 5 of 7 ready", None):
        code, out, _ = run(["reconcile", str(bundle), *local], capsys)
        assert code == 1, out
        if expected:
            assert f"{expected} jobs; the rest go in the next round (count budget 5)" in out
        else:
            assert "the rest go in the next round" not in out
        seen.append(attempts(bundle, capsys))
    # In plan order: the first five, the next five, the last two; one attempt each.
    for number, upto in enumerate((5, 10, 12)):
        assert [job for job, a in seen[number].items() if a is not None] == NAMES[:upto]
    assert set(seen[-1].values()) == {1}


def test_held_jobs_have_no_record_until_their_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = compile_to(tmp_path, TWELVE)
    session = Session(bundle, "local")
    reconcile_once(session, False, lambda line: None, budget=Budget(3, None))
    history = session.records.load()
    assert sorted(history.attempts) == NAMES[:3]
    assert all(len(a) == 1 and a[0].phase != "intent" for a in history.attempts.values())


def test_wait_goes_on_with_the_next_round_until_every_job_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = compile_to(tmp_path, TWELVE)
    code, out, _ = run(
        ["reconcile", str(bundle), "--wait", "--interval", "0.2", "--scheduler", "local",
         "--max-submit", "4"],
        capsys,
    )  # fmt: skip
    assert code == 0, out
    assert "submitted 4 of 12 ready jobs" in out
    assert set(attempts(bundle, capsys).values()) == {1}


class SlowSlurm:
    """A fake `shell.run`: sbatch takes `seconds` and answers increasing job ids; squeue and
    sacct answer an empty queue. `during` runs inside the n-th sbatch."""

    def __init__(self, seconds: float, during: dict[int, object] | None = None) -> None:
        self.seconds = seconds
        self.tags: list[str] = []
        self.during = during or {}

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        if argv[0] != "sbatch":
            return Completed(tuple(argv), 0, "", "")
        self.tags.append(next(a for a in argv if a.startswith("--job-name=")).split("=", 1)[1])
        hook = self.during.get(len(self.tags))
        if callable(hook):
            hook()
        time.sleep(self.seconds)
        return Completed(tuple(argv), 0, f"{1000 + len(self.tags)}\n", "")


def slow_session(bundle: Path, fake: SlowSlurm) -> Session:
    session = Session(bundle, "slurm")
    session.scheduler = SlurmScheduler(run=fake)
    return session


def test_the_time_budget_leaves_the_rest_for_the_next_round_unrecorded(tmp_path: Path) -> None:
    bundle = compile_to(tmp_path, TWELVE)
    fake = SlowSlurm(0.3)
    session = slow_session(bundle, fake)
    said: list[str] = []
    report = reconcile_once(session, False, said.append, budget=Budget(None, 0.5))
    went = len(fake.tags)
    # The first submission always goes; the budget stops the round well before twelve.
    assert 1 <= went < 12
    assert report.outcome is not None and len(report.outcome.deferred) == 12 - went
    assert said[-1] == (
        f"submitted {went} of 12 ready jobs; the rest go in the next round (time budget 0.5 s)"
    )
    history = session.records.load()
    assert sorted(history.attempts, key=NAMES.index) == NAMES[:went]
    # --json names the jobs the time budget left (their action still reads `submit`).
    data = document(session, report, False, said)
    Draft202012Validator(
        json.loads((REPO / "schemas" / "reconcile.schema.json").read_text())
    ).validate(data)
    assert data["deferred"] == NAMES[went:] and data["stopped"] is None


def test_a_round_longer_than_its_lease_renews_it_and_keeps_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OELLM_LOCK_LEASE_SECONDS", "1")
    bundle = compile_to(tmp_path, TWELVE)
    state = Session(bundle, "local").bundle.state_path
    contender: list[str] = []

    def second_round() -> None:
        # Started while the first round works, past its first lease: it must not take over.
        try:
            StateLock(state).acquire()
            contender.append("took the lock")
        except Busy as busy:
            contender.append(str(busy))

    fake = SlowSlurm(0.25, {8: second_round})
    session = slow_session(bundle, fake)
    started = time.monotonic()
    report = reconcile_once(session, False, lambda line: None, budget=Budget(None, None))
    assert time.monotonic() - started > 2  # two leases long
    assert report.busy is None and report.stopped is None
    assert len(fake.tags) == 12
    assert contender and contender[0].startswith("another reconcile is running")
    assert not (state / STATE_LOCK_NAME).exists()  # released at the end


def test_a_lease_renewal_the_state_dir_refuses_stops_the_round_with_exit_75(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OELLM_LOCK_LEASE_SECONDS", "1")
    bundle = compile_to(tmp_path, TWELVE)
    state = Session(bundle, "local").bundle.state_path
    blocked: list[Path] = []

    def block_renewal() -> None:
        # The renewal writes a temp file next to the lock: a folder in its place fails it.
        holder = json.loads((state / STATE_LOCK_NAME).read_text())
        path = state / f".{STATE_LOCK_NAME}.{holder['token']}.{holder['pid']}.tmp"
        path.mkdir()
        blocked.append(path)

    fake = SlowSlurm(0.3, {2: block_renewal})
    session = slow_session(bundle, fake)
    report = reconcile_once(session, False, lambda line: None, budget=Budget(None, None))
    assert blocked
    assert report.exit_code == 75
    assert report.stopped is not None and "could not renew the state lock's lease" in report.stopped
    went = len(fake.tags)
    assert went < 12
    # Every job submitted has its job id; none after it has even an intent.
    history = session.records.load()
    assert sorted(history.attempts, key=NAMES.index) == NAMES[:went]
    assert all(a[0].job_id for a in history.attempts.values())


def test_the_budgets_come_from_the_environment_and_a_bad_value_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = compile_to(tmp_path, TWELVE)
    monkeypatch.setenv("OELLM_MAX_SUBMIT", "3")
    code, out, _ = run(["reconcile", str(bundle), "--dry-run", "--scheduler", "local"], capsys)
    assert code == 0
    assert out.splitlines()[-1].startswith("submitted 3 of 12 ready jobs")
    # The command line wins over the environment; 0 is no limit.
    code, out, _ = run(
        ["reconcile", str(bundle), "--dry-run", "--scheduler", "local", "--max-submit", "0"],
        capsys,
    )
    assert code == 0 and "the rest go in the next round" not in out
    monkeypatch.setenv("OELLM_MAX_SUBMIT", "many")
    code, _, err = run(["reconcile", str(bundle), "--scheduler", "local"], capsys)
    assert code == 2
    assert "Invalid value for '--max-submit' (env var: 'OELLM_MAX_SUBMIT')" in err
    assert "Traceback" not in err
    monkeypatch.delenv("OELLM_MAX_SUBMIT")
    code, _, err = run(["reconcile", str(bundle), "--time-budget", "-1"], capsys)
    assert code == 2 and "--time-budget" in err
