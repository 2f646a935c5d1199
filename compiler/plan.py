"""Draw a compiled plan for people: text boxes (`plan.txt`, `oellm plan`), Graphviz dot and
Mermaid. Everything is read from the lockfile data, so a committed bundle draws the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from oellm.lockfile.model import Lock, LockJob

WIDTH = 70
DEFAULT_JOBS_PER_STAGE = 5
# About what one `oellm reconcile` round submits in its default 60 s time budget at ~0.1 s per
# sbatch (a busy controller takes up to 1 s); the site's max_jobs caps it further.
SUBMITS_PER_ROUND = 500


def _stages(jobs: Iterable[LockJob]) -> dict[str | None, list[LockJob]]:
    stages: dict[str | None, list[LockJob]] = {}
    for job in jobs:
        stages.setdefault(job.stage, []).append(job)
    return stages


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _box(title: str, sections: list[list[str]]) -> list[str]:
    inner = WIDTH - 4
    lines = ["┌" + "─" * (WIDTH - 2) + "┐", f"│ {_fit(title, inner):<{inner}} │"]
    for section in sections:
        if not section:
            continue
        lines.append("├" + "─" * (WIDTH - 2) + "┤")
        lines.extend(f"│ {_fit(line, inner):<{inner}} │" for line in section)
    lines.append("└" + "─" * (WIDTH - 2) + "┘")
    return lines


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _short_path(path: str) -> str:
    parts = path.split("/")
    return path if len(parts) <= 3 else ".../" + "/".join(parts[-3:])


def describe_condition(cond: dict[str, Any]) -> str:
    kind = cond.get("class_name", "?")
    if kind == "CompositeCondition":
        inner = f" {cond['mode']} ".join(describe_condition(c) for c in cond["conditions"])
        return f"({inner})"
    if kind == "FileExistsCondition":
        return f"FileExists: {_short_path(cond['path'])}"
    if kind == "SlurmStateCondition":
        return f"SlurmState: {cond['job_name']} = {cond['state']}"
    if kind == "TimeCondition":
        return f"Time: after {cond['after']}"
    if kind == "CommandCondition":
        command = cond["command"]
        return f"Command: {command if isinstance(command, str) else ' '.join(command)}"
    return str(kind)


_ENCODER = json.JSONEncoder(sort_keys=True)  # as json.dumps(value, sort_keys=True) writes


def _json(value: Any) -> str:
    """`json.dumps(value, sort_keys=True)`, without a new encoder for each value."""
    kind = type(value)
    if kind is str:
        return json.encoder.encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    return _ENCODER.encode(value)


def _swept(jobs: Iterable[LockJob]) -> dict[str, list[Any]]:
    """Keys whose value differs between jobs of one stage, with all their distinct values."""
    values: dict[str, dict[str, Any]] = {}
    varies: set[str] = set()
    for members in _stages(jobs).values():
        within: dict[str, set[str]] = {}
        for job in members:
            for key, value in job.params.items():
                text = _json(value)
                within.setdefault(key, set()).add(text)
                values.setdefault(key, {}).setdefault(text, value)
        varies.update(k for k, seen in within.items() if len(seen) > 1)
    return {k: list(v.values()) for k, v in values.items() if k in varies}


def plan_text(lock: Lock, max_jobs_per_stage: int = DEFAULT_JOBS_PER_STAGE) -> str:
    jobs = lock.jobs
    stages = _stages(jobs)
    rule = "=" * WIDTH
    lines = [
        rule,
        f" Experiment plan: {lock.project.name}",
        rule,
        f"Total: {_plural(len(jobs), 'job')} across {_plural(len(stages), 'stage')}",
        f"Output: {lock.project.output_dir}",
        "",
    ]
    swept = _swept(jobs)
    if swept:
        combos = {_ENCODER.encode([job.params.get(k) for k in swept]) for job in jobs}
        body = [
            f"• {key}: [{', '.join(_value(v) for v in values)}]" for key, values in swept.items()
        ]
        lines += _box("Hyperparameter sweep", [[*body, f"Total combinations: {len(combos)}"]])
        lines.append("")
    names = {job.name: job.stage for job in jobs}
    for number, (stage, members) in enumerate(stages.items()):
        upstream = sorted(
            {str(names[d]) for job in members for d in job.depends_on if d in names},
        )
        if number and upstream:
            lines += ["", " " * (WIDTH // 2) + "│", " " * (WIDTH // 2) + "▼", ""]
        elif number:
            lines.append("")
        first = members[0]
        start = [describe_condition(c) for c in first.start_conditions]
        cancel = [describe_condition(c) for c in first.cancel_conditions]
        gating = ["Start: after " + ", ".join(upstream) if upstream else "Start: immediate"]
        if start:
            gating = [*gating, "Start conditions:", *(f"  • {c}" for c in start)]
        if cancel:
            gating = [*gating, "Cancel conditions:", *(f"  • {c}" for c in cancel)]
        finish = first.finish_condition
        if finish:
            gating = [*gating, f"Not submitted when done: {describe_condition(finish)}"]
        gating += _arrays(lock, members)
        shown = [job.name for job in members[:max_jobs_per_stage]]
        if len(members) > max_jobs_per_stage:
            shown.append(f"... and {len(members) - max_jobs_per_stage} more")
        title = f"Stage: {stage or '(none)'} ({_plural(len(members), 'job')})"
        lines += _box(title, [gating, shown])
        lines += _array_proposal(lock, stage, members)
    lines.append("")
    return "\n".join(lines)


def _array_proposal(lock: Lock, stage: str | None, members: list[LockJob]) -> list[str]:
    """A stage of single jobs too many for one reconcile round: suggest a job array, which
    goes to SLURM in one sbatch."""
    singles = [job for job in members if not job.array_group]
    queued = sum(job.chain_repeat or 1 for job in singles)
    max_jobs = lock.project.max_jobs
    per_round = min(SUBMITS_PER_ROUND, max_jobs) if max_jobs else SUBMITS_PER_ROUND
    if queued <= per_round:
        return []
    rounds = -(-queued // per_round)
    return [
        f"stage {stage or '(none)'}: {queued:,} jobs would take {rounds} rounds at "
        f"{per_round:,} per round; set slurm.array: true to submit them as one job array"
    ]


def _arrays(lock: Lock, members: list[LockJob]) -> list[str]:
    """How a stage's jobs go to SLURM when `slurm.array` groups them."""
    groups = list(dict.fromkeys(j.array_group for j in members if j.array_group))
    if not groups:
        return []
    lines = [f"Submitted as {_plural(len(groups), 'array')}:"]
    for name in groups:
        group = lock.arrays[name]
        throttle = f", at most {group.throttle} at once" if group.throttle else ""
        lines.append(f"  • {name} ({_plural(group.size, 'task')}{throttle})")
    return lines


def _dot_id(text: str) -> str:
    return json.dumps(text)


def plan_dot(lock: Lock) -> str:
    lines = ["digraph plan {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for number, (stage, members) in enumerate(_stages(lock.jobs).items()):
        label = f"{stage or '(none)'} ({len(members)})"
        lines.append(f"  subgraph cluster_{number} {{")
        lines.append(f"    label={_dot_id(label)};")
        lines.extend(f"    {_dot_id(job.name)};" for job in members)
        lines.append("  }")
    lines.extend(_edges(lock.jobs, lambda a, b: f"  {_dot_id(a)} -> {_dot_id(b)};"))
    lines.append("}")
    return "\n".join(lines) + "\n"


def plan_mermaid(lock: Lock) -> str:
    ids = {job.name: f"j{n}" for n, job in enumerate(lock.jobs)}
    lines = ["flowchart LR"]
    for number, (stage, members) in enumerate(_stages(lock.jobs).items()):
        label = f"{stage or '(none)'} ({len(members)})"
        lines.append(f'  subgraph s{number}["{label}"]')
        lines.extend(f'    {ids[job.name]}["{job.name}"]' for job in members)
        lines.append("  end")
    lines.extend(_edges(lock.jobs, lambda a, b: f"  {ids[a]} --> {ids[b]}"))
    return "\n".join(lines) + "\n"


def _edges(jobs: Iterable[LockJob], draw: Any) -> Iterable[str]:
    for job in jobs:
        for upstream in job.depends_on:
            yield draw(upstream, job.name)
