"""Restart budgets: when a finished attempt may be followed by another; and the limits of the
submission protocol: when an unconfirmed or unseen submission counts as lost.

Failures of the infrastructure and of the code have separate budgets, and with a progress
file a run of attempts that did not advance the checkpoint stops the restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from .model import Attempt, RestartPolicy

# An intent that the scheduler still does not know after this long (and two looks) was never
# submitted: sbatch died before SLURM accepted it.
INTENT_GRACE = timedelta(minutes=2)
# A submitted job that SLURM has no record of, in this many consecutive answers, is lost.
UNSEEN_LIMIT = 3
# Submissions that failed this many times in a row are not tried again automatically.
SUBMIT_TRIES = 3

# Failures of the infrastructure and of the code have separate restart budgets.
INFRA_FAILURES = frozenset({"TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "LOST", "DEADLINE"})
CODE_FAILURES = frozenset({"FAILED", "OUT_OF_MEMORY", "CANCELLED"})


def budget_exhausted(attempts: Sequence[Attempt], policy: RestartPolicy) -> str | None:
    limit = policy.max_attempts
    if limit is not None and len(attempts) >= limit:
        return f"max_attempts {limit} reached"
    infra = sum(1 for a in attempts if a.final_state in INFRA_FAILURES and not a.restart_requested)
    code = sum(1 for a in attempts if a.final_state in CODE_FAILURES and not a.restart_requested)
    if policy.infra_restarts is not None and infra > policy.infra_restarts:
        return f"infra_restarts {policy.infra_restarts} used up"
    if policy.code_restarts is not None and code > policy.code_restarts:
        return f"code_restarts {policy.code_restarts} used up"
    patience = policy.without_progress
    if patience and policy.progress_file:
        stalled, best = 0, None
        for a in attempts:
            if a.iteration is not None and (best is None or a.iteration > best):
                best, stalled = a.iteration, 0
            else:
                stalled += 1
        if stalled >= patience:
            return f"no progress in the last {stalled} attempts (best iteration {best})"
    return None
