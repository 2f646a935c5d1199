"""How much one round submits: a count budget and a time budget, so a first round of 10,000
ready jobs (0.1-1 s per sbatch) fits a cron interval and the state lock's lease.

The count budget counts SLURM jobs, as SLURM's MaxSubmitJobs does: one per plain job, one per
array task, one per link of a chain. It defaults to the site's `slurm.limits.max_jobs` (from
the lockfile) minus the jobs the user has queued or running. Ready jobs past a budget wait for
the next round with no record written, in plan order: earlier stages first (a job after
everything it depends on), within a stage in lockfile order. A job gated on one held this
round (`dependency: slurm`) is held too; a chain in flight always gets its missing links, and
a chain longer than --max-submit goes alone in a round of its own.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .actions import Action, Submit, Wait
from .model import LockJob

TIME_BUDGET_S = 60.0
MAX_SUBMIT_ENV = "OELLM_MAX_SUBMIT"
TIME_BUDGET_ENV = "OELLM_TIME_BUDGET_SECONDS"


@dataclass(frozen=True)
class Budget:
    """What the user asked (`--max-submit`, `--time-budget`); None or 0: no limit."""

    max_submit: int | None = None
    seconds: float | None = TIME_BUDGET_S


NO_LIMIT = Budget(None, None)


def budget(max_submit: int | None, seconds: float | None) -> Budget:
    """The command line's values (0: no limit; None: the default)."""
    return Budget(max_submit or None, TIME_BUDGET_S if seconds is None else (seconds or None))


@dataclass(frozen=True)
class CountLimit:
    """This round's count budget and where it comes from (None: no limit)."""

    limit: int | None
    source: str = ""
    site: bool = False  # the site's limit: past it, SLURM refuses


def count_limit(budget: Budget, site_max: int | None, queued: int) -> CountLimit:
    """The smaller of --max-submit and the site's submit limit left after `queued` jobs."""
    left = max(0, site_max - queued) if site_max is not None else None
    if budget.max_submit is not None and (left is None or budget.max_submit <= left):
        return CountLimit(budget.max_submit, f"count budget {budget.max_submit}")
    if left is None:
        return CountLimit(None)
    return CountLimit(left, f"site max_jobs {site_max}, {queued} queued or running", site=True)


def plan_rank(jobs: Sequence[LockJob]) -> dict[str, int]:
    """Each job's place in plan order: by stage depth (a job comes after everything it
    depends on), then by its place in the lockfile (the sweep's order)."""
    known = {job.name for job in jobs}
    graph = {job.name: [u for u in job.depends_on if u in known] for job in jobs}
    depth: dict[str, int] = {}
    try:
        for name in graphlib.TopologicalSorter(graph).static_order():
            depth[name] = 1 + max((depth[u] for u in graph[name]), default=-1)
    except graphlib.CycleError:  # the compiler refuses cycles; a hand-edited lock keeps its order
        depth = dict.fromkeys(known, 0)
    position = {job.name: n for n, job in enumerate(jobs)}
    ordered = sorted(position, key=lambda name: (depth[name], position[name]))
    return {name: n for n, name in enumerate(ordered)}


def slurm_jobs(action: Submit, job: LockJob) -> int:
    """How many SLURM jobs a submission queues: one per link of a chain still to go."""
    if action.link is not None:
        return max(1, job.chain_repeat - action.link + 1)
    return max(1, job.chain_repeat)


@dataclass(frozen=True)
class Held:
    """What the count budget left for the next round."""

    ready: int  # jobs with a new attempt ready to submit
    held: tuple[str, ...]  # of those, the ones that wait
    limit: CountLimit


def within_count(
    actions: Sequence[Action], jobs: Sequence[LockJob], limit: CountLimit
) -> tuple[list[Action], Held]:
    """The actions with every new attempt past the count budget turned into a `Wait`."""
    by_name: Mapping[str, LockJob] = {job.name: job for job in jobs}
    new = [a for a in actions if isinstance(a, Submit) and a.link is None and a.job in by_name]
    if limit.limit is None or not new:
        return list(actions), Held(len(new), (), limit)
    rank = plan_rank(jobs)
    left = limit.limit
    for action in actions:  # a chain in flight is finished first: it is half-submitted
        if isinstance(action, Submit) and action.link is not None and action.job in by_name:
            left -= slurm_jobs(action, by_name[action.job])
    held: dict[str, Wait] = {}
    for action in sorted(new, key=lambda a: rank[a.job]):
        cost = slurm_jobs(action, by_name[action.job])
        gated_on_held = any(u.removeprefix("job:") in held for u in action.upstream_ids)
        # A chain longer than --max-submit still goes, alone, or it would never go.
        alone = not limit.site and left == limit.limit and not held
        if (cost <= left or alone) and not gated_on_held:
            left -= cost
            continue
        # Once one job waits, every later one does: the order stays the plan's.
        left = 0
        held[action.job] = Wait(
            action.job,
            f"ready; waits for the next round ({limit.source} reached this round)",
            attempt=action.attempt - 1 if action.attempt > 1 else None,
        )
    new_ids = {id(a) for a in new}
    out = [held.get(a.job, a) if id(a) in new_ids else a for a in actions]
    return out, Held(len(new), tuple(held), limit)


def summary(ready: int, submitted: int, why: str) -> str:
    """The line a round prints when a budget left ready jobs for the next round."""
    return f"submitted {submitted:,} of {ready:,} ready jobs; the rest go in the next round ({why})"
