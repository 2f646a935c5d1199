"""`oellm reconcile --json`: one round as one JSON object (schemas/reconcile.schema.json): every
job's action with its reason, what was carried out, and the errors. `schema_version` changes
only for a breaking change; new fields are additive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SCHEMA_VERSION = 1
ACTION_FIELDS = (
    "kind",
    "job",
    "reason",
    "attempt",
    "job_id",
    "state",
    "exit_code",
    "cause",
    "settled",
    "link",
)


def document(session: Any, report: Any, dry_run: bool, lines: Sequence[str]) -> dict[str, Any]:
    # Each action kind has only its own fields; the JSON gives every field, null where a kind
    # has none, so its shape is one for all kinds.
    actions = [
        {
            **{name: getattr(action, name, None) for name in ACTION_FIELDS},
            "settled": bool(getattr(action, "settled", False)),
            "job_ids": list(getattr(action, "job_ids", ())),
        }
        for action in report.actions
    ]
    outcome = report.outcome
    return {
        "schema_version": SCHEMA_VERSION,
        "bundle": str(session.bundle.path),
        "dry_run": dry_run,
        "exit_code": report.exit_code,
        "busy": report.busy,
        "stopped": report.stopped,
        "scheduler_available": report.observation.available,
        "scheduler_error": report.observation.error,
        "actions": actions,
        "done": list(outcome.acted) if outcome else [],
        "deferred": list(outcome.deferred) if outcome else [],
        "errors": [*(outcome.errors if outcome else []), *report.damaged],
        "lines": list(lines),
    }
