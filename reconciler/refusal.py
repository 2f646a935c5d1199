"""A submission the scheduler refused for good (issue 13): sbatch answered `sbatch: error:`
(an invalid partition, an option it does not take), so no job exists and the same script
would be refused again. The attempt ends at once as SUBMIT_FAILED with sbatch's words, and is
not submitted again until its script changes (a recompile) or the user runs `oellm retry`.

A submission whose outcome is unknown (a timeout, a controller that did not answer) keeps
the intent-then-lookup protocol: only a refusal is known to have created nothing.
"""

from __future__ import annotations

import dataclasses

from .actions import Wait
from .model import Attempt

SUBMIT_FAILED = "SUBMIT_FAILED"


def refused(intent: Attempt, why: str, stamp: str) -> Attempt:
    """The intent, ended: sbatch refused it, so no job carries its tag."""
    ended = dataclasses.replace(
        intent,
        phase="finished",
        final_state=SUBMIT_FAILED,
        ended_at=stamp,
        reason=f"sbatch refused it: {why}",
    )
    if ended.links:
        ended = ended.with_link(1, phase="finished", state=SUBMIT_FAILED, reason=why)
    return ended


def refused_wait(latest: Attempt) -> Wait:
    """What a job whose last submission was refused waits for."""
    return Wait(
        latest.job,
        f"{latest.reason or 'sbatch refused it'}; not submitted again until the script "
        "changes (recompile) or `oellm retry`",
        attempt=latest.attempt,
        outcome="failed",
    )
