"""What decide returns: actions with reasons, one small record per kind. A job gets one main
action (or a `Wait` saying why nothing happens) and any number of observations before it
(`Fired` events, `StateSeen` transitions, `LinkSeen` changes of a chain's links).

Each kind holds only its own fields, so `act` and a dry run read what a kind means from its
type; `kind` is the name a dry run's log and the decide case files use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .model import LockJob, State

ActionKind = Literal[
    "submit",
    "adopt",
    "recover",
    "finish",
    "unseen",
    "lost",
    "cancel",
    "drop",
    "wait",
    "event",
    "state",
    "link",
]
OBSERVATIONS = ("event", "state", "link")
# Why a `Cancel` is sent; `restart`, `condition` and `prune` also change the job's records.
CancelOrigin = Literal["restart", "condition", "prune", "finish", "chain", "user", "request"]
# How a job that will not change any more without the user ended (`Wait.outcome`):
# `pending` never ran (an upstream job ended without success).
Settled = Literal["pending", "completed", "failed", "cancelled"]
# What a `LinkSeen` records about one link of a chain.
LinkChange = Literal["adopt", "unseen", "lost", "ended"]


@dataclass(frozen=True)
class _Action:
    kind: ClassVar[ActionKind]
    job: str
    reason: str

    def describe(self, job: LockJob | None = None) -> str:
        """A dry run's line; `job` (when the scheduler runs arrays) names a member's array."""
        return f"{self.job}: {self._what(job)}: {self.reason}"

    def _what(self, job: LockJob | None) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Submit(_Action):
    """A new attempt (`link` None), or the missing links of a chain in flight from `link` on."""

    kind: ClassVar[ActionKind] = "submit"
    attempt: int
    cause: str | None = None  # what the attempt's record says caused it (default: the reason)
    link: int | None = None
    after: str | None = None  # the job id the first new link is queued behind
    # `job.dependency: slurm`: the upstream job ids of its --dependency=afterok (`job:<name>`
    # for an upstream submitted in this same round, filled in once it has an id).
    upstream_ids: tuple[str, ...] = ()

    def _what(self, job: LockJob | None) -> str:
        task = (
            f" as task {job.array_index} of array {job.array_group}"
            if job is not None and job.array_group is not None
            else ""
        )
        return f"would submit attempt {self.attempt}{task}" + (
            f" from link {self.link}" if self.link else ""
        )


@dataclass(frozen=True)
class Adopt(_Action):
    """An unconfirmed submission found in SLURM by its tag."""

    kind: ClassVar[ActionKind] = "adopt"
    attempt: int
    job_id: str

    def _what(self, job: LockJob | None) -> str:
        return f"would adopt job {self.job_id}"


@dataclass(frozen=True)
class Recover(_Action):
    """A submission found in SLURM with no record of it, to be written as attempt `attempt`."""

    kind: ClassVar[ActionKind] = "recover"
    attempt: int
    job_id: str
    # (link, tag, job id, since) of each of its jobs: one, or a chain's links. `since`: the
    # earliest time SLURM reports for that job (`SchedulerJob.since`, ISO), None if none.
    found: tuple[tuple[int, str, str, str | None], ...]

    def _what(self, job: LockJob | None) -> str:
        return f"would record attempt {self.attempt} from SLURM (job {self.job_id})"


@dataclass(frozen=True)
class Finish(_Action):
    """An attempt in flight ended (or was lost by the scheduler: `state` LOST)."""

    kind: ClassVar[ActionKind] = "finish"
    attempt: int
    job_id: str | None
    state: State | None
    exit_code: int | None = None

    def _what(self, job: LockJob | None) -> str:
        return f"would record {self.state}"


@dataclass(frozen=True)
class Unseen(_Action):
    """The scheduler answered without knowing the submission: counted, never resubmitted."""

    kind: ClassVar[ActionKind] = "unseen"
    attempt: int
    job_id: str | None = None

    def _what(self, job: LockJob | None) -> str:
        return "would note: not seen by the scheduler"


@dataclass(frozen=True)
class Lost(_Action):
    """An intent the scheduler never got: the attempt ends as never submitted."""

    kind: ClassVar[ActionKind] = "lost"
    attempt: int

    def _what(self, job: LockJob | None) -> str:
        return "would record: never submitted"


@dataclass(frozen=True)
class Cancel(_Action):
    kind: ClassVar[ActionKind] = "cancel"
    attempt: int
    job_id: str | None
    origin: CancelOrigin
    # Every live job it must stop, later links first, so that a queued link never starts
    # because the one before it was cancelled.
    job_ids: tuple[str, ...] = ()

    def _what(self, job: LockJob | None) -> str:
        return f"would cancel job {self.job_id}"


@dataclass(frozen=True)
class Drop(_Action):
    """A job never submitted that will not be: its cancel condition holds."""

    kind: ClassVar[ActionKind] = "drop"

    def _what(self, job: LockJob | None) -> str:
        return "would drop"


@dataclass(frozen=True)
class Wait(_Action):
    """Nothing to do this round, and why. `outcome`: the job will not change any more
    without the user, and ended so."""

    kind: ClassVar[ActionKind] = "wait"
    attempt: int | None = None
    job_id: str | None = None
    outcome: Settled | None = None

    @property
    def settled(self) -> bool:
        return self.outcome is not None

    def _what(self, job: LockJob | None) -> str:
        return "no action"


@dataclass(frozen=True)
class Fired(_Action):
    """A log or state event that fired, with what it records in the attempt's ledger."""

    kind: ClassVar[ActionKind] = "event"
    attempt: int
    job_id: str | None
    event: Mapping[str, Any] = field(default_factory=dict)
    job_ids: tuple[str, ...] = ()  # the attempt's live jobs, which a restart or cancel stops
    # The attempt's jobs still pending in the queue (a chain's later links), which an
    # `exclude_node` step moves off the node at once.
    queued_ids: tuple[str, ...] = ()

    def _what(self, job: LockJob | None) -> str:
        return "would act on"


@dataclass(frozen=True)
class StateSeen(_Action):
    """A state transition to record (so the next round sees transitions, not states)."""

    kind: ClassVar[ActionKind] = "state"
    attempt: int
    job_id: str | None
    state: str

    def _what(self, job: LockJob | None) -> str:
        return "observed"


@dataclass(frozen=True)
class LinkSeen(_Action):
    """What one link of a chain did, to record in the attempt's record."""

    kind: ClassVar[ActionKind] = "link"
    attempt: int
    link: int
    change: LinkChange
    job_id: str | None = None
    state: str | None = None
    exit_code: int | None = None
    detail: str | None = None  # what the scheduler said of the link (squeue's reason)

    def _what(self, job: LockJob | None) -> str:
        return "would record"


MainAction = Submit | Adopt | Recover | Finish | Unseen | Lost | Cancel | Drop | Wait
Observed = Fired | StateSeen | LinkSeen
Action = MainAction | Observed


def main_action(actions: Sequence[Action]) -> MainAction:
    """The one action of a job that is not an observation."""
    return next(a for a in actions if not isinstance(a, Observed))
