"""What every command needs about one bundle (`Session`): the bundle, its records, its
scheduler, and the look at SLURM and the decisions a round or a status starts from; with the
settings behind them (which scheduler, the tags' key, the intent grace, the lookback).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from oellm.bundle_files import LOCK_NAME
from oellm.errors import CommandError
from oellm.shell import run

from . import prefetch, tags
from .actions import Action, Submit, Wait
from .bundle import Bundle, Recompiled, check_scripts, load_bundle, lock_bytes
from .decide import decide
from .decide_job import Options
from .errors import ReconcileError
from .identity import claim, key_for, read_identity
from .model import History, Observation
from .observe import observe
from .policy import INTENT_GRACE
from .records import Records
from .retry import revived
from .schedulers import Scheduler, slurm

# How far back a round asks SLURM for submissions it has no record of, before it submits an
# attempt (OELLM_LOOKBACK_DAYS changes it): older ones are not found, and are submitted again.
LOOKBACK = timedelta(days=30)

log = logging.getLogger("oellm.reconcile")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def project_key(bundle: Bundle) -> str:
    """The tag key of all of a bundle's submissions (see `identity`)."""
    return key_for(bundle.path, bundle.project, bundle.state_dir, bundle.state_path, bundle.key)


def seconds(name: str, default: float) -> float:
    """The number in environment variable `name`, or `default` when it is unset or not a
    number."""
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


def scheduler_name(name: str | None) -> str:
    """The scheduler asked for, or the default: slurm where sbatch is installed."""
    if name is None:
        return "slurm" if slurm.available() else "local"
    return name


def make_scheduler(name: str | None, state_dir: Path) -> Scheduler:
    name = scheduler_name(name)
    if name == "slurm":
        return slurm.SlurmScheduler()
    if name == "local":
        from .schedulers.local import LocalScheduler  # its runner is only needed here

        return LocalScheduler(state_dir)
    raise ReconcileError(f"unknown scheduler '{name}'", hint="use --scheduler slurm or local")


def run_command(argv: tuple[str, ...], cwd: Path) -> bool:
    try:
        return run(list(argv), timeout=60, cwd=cwd).returncode == 0
    except CommandError:
        return False


def intent_grace() -> timedelta:
    """How long an unconfirmed submission is looked for before it counts as never made.

    OELLM_INTENT_GRACE_SECONDS shortens it (the fault-injection tests do); lowering it on a
    busy cluster risks submitting twice, so it is not a command-line option.
    """
    raw = os.environ.get("OELLM_INTENT_GRACE_SECONDS")
    try:
        return timedelta(seconds=float(raw)) if raw else INTENT_GRACE
    except ValueError:
        return INTENT_GRACE


class Session:
    """What a command needs about one bundle: the bundle, its records and its scheduler."""

    def __init__(
        self,
        path: Path,
        scheduler: str | None,
        options: Options | None = None,
        allow_edited: bool = False,
        claim_state: bool = False,
        early: bool = False,
    ) -> None:
        """`early`: start the sacct the last round asked before reading the bundle
        (`prefetch`), for a round about to run now: `close` drops it if no query took it."""
        name = scheduler_name(scheduler)
        early_slurm = slurm.SlurmScheduler() if early and name == "slurm" else None
        data = lock_bytes(path / LOCK_NAME) if early_slurm is not None else None
        state_dir = None
        if early_slurm is not None and data is not None:
            state_dir = prefetch.start(path, data, early_slurm)
        try:
            # Scripts are checked when they are about to be submitted (`checked`), not here.
            self.bundle = load_bundle(path, check_scripts=False, data=data, state_dir=state_dir)
        except BaseException:
            if early_slurm is not None:
                early_slurm.discard_prefetch()
            raise
        self.allow_edited = allow_edited
        self.options = options or Options(intent_grace())
        self.records = Records(self.bundle.state_path)
        self.claim_state = claim_state
        # --claim-state: this bundle takes over a state dir another bundle path used (the
        # same experiment moved or checked out twice); the key of its tags stays.
        found = read_identity(self.bundle.state_path) if claim_state else None
        self.key = found.key if found is not None else project_key(self.bundle)
        self.scheduler = early_slurm or make_scheduler(name, self.bundle.state_path)

    def close(self) -> None:
        """Drop the early sacct if no query took it."""
        if isinstance(self.scheduler, slurm.SlurmScheduler):
            self.scheduler.discard_prefetch()

    @property
    def prefix(self) -> str:
        return tags.prefix(self.key)

    def history(self, read_completed: bool = True) -> History:
        """The records; a round passes `read_completed=False` and reads the records of jobs
        settled in the completed folder only if it needs them (`Records.load`)."""
        history = self.records.load(read_completed)
        for last in history.in_flight():
            if last.scheduler != self.scheduler.name:
                raise ReconcileError(
                    f"job {last.job} attempt {last.attempt} runs on the '{last.scheduler}' "
                    f"scheduler, not '{self.scheduler.name}'",
                    str(self.records.attempt_path(last.job, last.attempt)),
                    hint=f"use --scheduler {last.scheduler} until it has finished",
                )
        return revived(history)  # a drop `oellm retry` undid no longer counts

    def look(self, history: History) -> tuple[Observation, list[Action]]:
        """Observe and decide. A round that would submit an attempt it has no record of
        first asks SLURM back to the lookback horizon for that job's earlier submissions
        (a record lost or moved aside), and decides again on that fuller view."""
        now = utcnow()
        obs = self._observe(history, now, None)
        actions = decide(self.bundle.jobs, history, obs, now, self.options)
        if any(_new_attempt(a) for a in actions) and not obs.looked_back:
            horizon = now - timedelta(days=seconds("OELLM_LOOKBACK_DAYS", LOOKBACK.days))
            obs = self._observe(history, now, horizon)
            actions = decide(self.bundle.jobs, history, obs, now, self.options)
            if not obs.available:
                # Without SLURM's answer nothing is submitted: it may know these attempts.
                actions = [_unconfirmed(a) if _new_attempt(a) else a for a in actions]
        for action in actions:
            log.info("%s: %s: %s", action.job, action.kind, action.reason)
        return obs, actions

    def checked(
        self, history: History, obs: Observation, actions: list[Action]
    ) -> tuple[Observation, list[Action]]:
        """The round's view once the scripts it submits match the lockfile (ScriptChanged
        when one was edited, unless --allow-edited). A script that differs because the
        bundle was recompiled during the round is no edit: the round reads the new bundle
        (into the same state dir) and decides again."""
        for _ in range(3):
            if self.allow_edited:
                return obs, actions
            submits = {a.job for a in actions if isinstance(a, Submit)}
            try:
                check_scripts(self.bundle, (job for job in self.bundle.jobs if job.name in submits))
                return obs, actions
            except Recompiled as recompiled:
                fresh = load_bundle(self.bundle.path, check_scripts=False)
                if fresh.state_path != self.bundle.state_path or fresh.key != self.bundle.key:
                    raise recompiled from None
                self.bundle = fresh
                obs, actions = self.look(history)
        raise Recompiled(
            "the bundle was recompiled again and again while this round read it",
            str(self.bundle.path),
            hint="run oellm reconcile again once the compiles are done",
        )

    def observe_now(self, history: History) -> Observation:
        """What the scheduler says of the attempts in flight, without deciding anything."""
        return self._observe(history, utcnow(), None)

    def _observe(self, history: History, now: datetime, lookback: datetime | None) -> Observation:
        return observe(
            self.bundle,
            history,
            self.scheduler,
            self.prefix,
            now,
            run_command,
            self.records,
            lookback=lookback,
        )

    def claim(self) -> None:
        """Record that this bundle uses its state dir (held lock only)."""
        claim(self.bundle.path, self.bundle.project, self.key, self.records.state_dir)

    def apply_moves(self, say: Callable[[str], None]) -> None:
        for old, new in self.bundle.moved.items():
            if self.records.move(old, new):
                say(f"moved the records of {old} to {new}")


def _new_attempt(action: Action) -> bool:
    return isinstance(action, Submit) and action.link is None


def _unconfirmed(action: Action) -> Action:
    return Wait(
        action.job,
        "ready, but SLURM did not answer whether it knows an earlier submission; not "
        "submitted this round",
        attempt=action.attempt if isinstance(action, Submit) else None,
    )
