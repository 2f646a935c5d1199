"""The human view of a bundle (`plan.txt`): jobs per stage, their conditions and dependencies."""

from __future__ import annotations

from typing import Any


def plan_text(lock: dict[str, Any]) -> str:
    jobs = lock["jobs"]
    project = lock["project"]
    stages: dict[str | None, list[dict[str, Any]]] = {}
    for job in jobs:
        stages.setdefault(job["stage"], []).append(job)
    lines = [
        f"Project {project['name']}: {len(jobs)} job{'s' if len(jobs) != 1 else ''} "
        f"in {len(stages)} stage{'s' if len(stages) != 1 else ''}",
        f"Output: {project['output_dir']}",
        "",
    ]
    for stage, members in stages.items():
        lines.append(
            f"Stage {stage or '(none)'}: {len(members)} job{'s' if len(members) != 1 else ''}"
        )
        for job in members:
            lines.append(f"  {job['name']}")
            for key, value in job["params"].items():
                lines.append(f"      {key} = {value!r}")
            for cond in job["start_conditions"]:
                lines.append(f"      start when {_condition(cond)}")
            for cond in job["cancel_conditions"]:
                lines.append(f"      cancel when {_condition(cond)}")
            if job["depends_on"]:
                lines.append(f"      after {', '.join(job['depends_on'])}")
        lines.append("")
    return "\n".join(lines)


def _condition(cond: dict[str, Any]) -> str:
    kind = cond.get("class_name", "?")
    if kind == "CompositeCondition":
        joined = f" {cond['mode']} ".join(_condition(c) for c in cond["conditions"])
        return f"({joined})"
    details = ", ".join(f"{k}={v}" for k, v in cond.items() if k not in ("class_name", "message"))
    return f"{kind.removesuffix('Condition')}({details})"
