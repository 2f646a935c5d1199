"""Restart budgets: when a finished attempt may be followed by another.

Failures of the infrastructure and of the code have separate budgets, and with a progress
file a run of attempts that did not advance the checkpoint stops the restarts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .records import Attempt

# Failures of the infrastructure and of the code have separate restart budgets.
INFRA_FAILURES = frozenset({"TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "LOST", "DEADLINE"})
CODE_FAILURES = frozenset({"FAILED", "OUT_OF_MEMORY", "CANCELLED"})


def budget_exhausted(attempts: Sequence[Attempt], policy: Mapping[str, Any]) -> str | None:
    limit = policy.get("max_attempts")
    if limit is not None and len(attempts) >= limit:
        return f"max_attempts {limit} reached"
    infra = sum(1 for a in attempts if a.final_state in INFRA_FAILURES and not a.restart_requested)
    code = sum(1 for a in attempts if a.final_state in CODE_FAILURES and not a.restart_requested)
    if policy.get("infra_restarts") is not None and infra > policy["infra_restarts"]:
        return f"infra_restarts {policy['infra_restarts']} used up"
    if policy.get("code_restarts") is not None and code > policy["code_restarts"]:
        return f"code_restarts {policy['code_restarts']} used up"
    patience = policy.get("without_progress")
    if patience and policy.get("progress_file"):
        stalled, best = 0, None
        for a in attempts:
            if a.iteration is not None and (best is None or a.iteration > best):
                best, stalled = a.iteration, 0
            else:
                stalled += 1
        if stalled >= patience:
            return f"no progress in the last {stalled} attempts (best iteration {best})"
    return None
