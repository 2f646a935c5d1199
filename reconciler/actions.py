"""What decide returns: actions with reasons. A job gets one main action (or a `wait` saying
why nothing happens) and any number of `event`/`state`/`link` observations before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
# What a `link` observation records about one link of a chain (in `Action.cause`).
LinkChange = Literal["adopt", "unseen", "lost", "ended"]
OBSERVATIONS = ("event", "state", "link")


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    job: str
    reason: str
    attempt: int | None = None
    job_id: str | None = None
    state: str | None = None
    exit_code: int | None = None
    cause: str | None = None
    settled: bool = False  # the job will not change any more without the user
    event: Mapping[str, Any] = field(default_factory=dict)  # for `event`: what fired
    # Chains: the link a `submit` starts from (None: a new attempt) or a `link` is about; for
    # `submit`, the job id the first new link is queued behind.
    link: int | None = None
    after: str | None = None
    # `submit` of a job gated by SLURM: the upstream job ids of its --dependency=afterok.
    upstream_ids: tuple[str, ...] = ()
    # Every live job a `cancel` (or an `event` that cancels) must stop, later links first, so
    # a queued link never starts because the one before it was cancelled.
    job_ids: tuple[str, ...] = ()
    # For `link`: what the scheduler said of the link (squeue's reason), kept in its record.
    detail: str | None = None
    # For `event`: this attempt's jobs still pending in the queue (a chain's later links),
    # which an `exclude_node` step moves off the node at once.
    queued_ids: tuple[str, ...] = ()
    # For `recover`: the submission found in SLURM with no record, as (link, tag, job id) of
    # each of its jobs (one, or a chain's links), to be written as the attempt's record.
    found: tuple[tuple[int, str, str], ...] = ()


def main(actions: Sequence[Action]) -> Action:
    """The one action of a job that is not an observation (`event`/`state`)."""
    return next(a for a in actions if a.kind not in OBSERVATIONS)
