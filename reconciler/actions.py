"""What decide returns: actions with reasons. A job gets one main action (or a `wait` saying
why nothing happens) and any number of `event`/`state` observations before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ActionKind = Literal[
    "submit", "adopt", "finish", "unseen", "lost", "cancel", "drop", "wait", "event", "state"
]


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


def main(actions: Sequence[Action]) -> Action:
    """The one action of a job that is not an observation (`event`/`state`)."""
    return next(a for a in actions if a.kind not in ("event", "state"))
