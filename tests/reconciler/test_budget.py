"""The round's budgets (budget.py): which ready jobs go this round and which wait, in plan
order, and how a count budget meets chains, arrays and SLURM dependencies."""

from __future__ import annotations

from typing import Any

from oellm.reconciler.actions import Action, Submit, Wait
from oellm.reconciler.budget import (
    NO_LIMIT,
    TIME_BUDGET_S,
    Budget,
    CountLimit,
    budget,
    count_limit,
    plan_rank,
    slurm_jobs,
    summary,
    within_count,
)
from oellm.reconciler.model import LockJob
from tests.reconciler.test_decide import lock_job


def jobs(*specs: dict[str, Any]) -> list[LockJob]:
    return [lock_job(spec) for spec in specs]


def first(name: str, **extra: Any) -> Submit:
    return Submit(name, "first submission", attempt=1, **extra)


def going(actions: list[Action]) -> list[str]:
    return [a.job for a in actions if isinstance(a, Submit)]


def waiting(actions: list[Action]) -> list[str]:
    return [a.job for a in actions if isinstance(a, Wait)]


def test_the_defaults_and_zero_as_no_limit() -> None:
    assert budget(None, None) == Budget(None, TIME_BUDGET_S)
    assert budget(0, 0) == NO_LIMIT
    assert budget(5, 12.5) == Budget(5, 12.5)


def test_the_count_budget_is_the_smaller_of_max_submit_and_the_site_limit_left() -> None:
    assert count_limit(Budget(None), None, 40) == CountLimit(None)
    assert count_limit(Budget(500), None, 40) == CountLimit(500, "count budget 500")
    site = count_limit(Budget(None), 1000, 40)
    assert (site.limit, site.site) == (960, True)
    assert site.source == "site max_jobs 1000, 40 queued or running"
    assert count_limit(Budget(500), 1000, 40).limit == 500
    assert count_limit(Budget(500), 1000, 900).limit == 100
    # More queued than the site allows (other tools, a lowered limit): nothing goes.
    assert count_limit(Budget(None), 10, 25).limit == 0


def test_plan_order_puts_stages_after_what_they_depend_on_then_keeps_the_lockfile_order() -> None:
    # The sweep lists the decay stage first; its jobs still come after the stable ones.
    lock = jobs(
        {"name": "decay_a", "stage": "decay", "depends_on": ["stable_a"]},
        {"name": "decay_b", "stage": "decay", "depends_on": ["stable_b"]},
        {"name": "stable_b", "stage": "stable"},
        {"name": "stable_a", "stage": "stable"},
        {"name": "eval_a", "stage": "eval", "depends_on": ["decay_a"]},
    )
    rank = plan_rank(lock)
    assert sorted(rank, key=rank.__getitem__) == [
        "stable_b",
        "stable_a",
        "decay_a",
        "decay_b",
        "eval_a",
    ]


def test_twelve_ready_jobs_with_a_budget_of_five_go_five_at_a_time_in_plan_order() -> None:
    lock = jobs(*({"name": f"j{n:02d}"} for n in range(12)))
    actions: list[Action] = [first(job.name) for job in lock]
    out, held = within_count(actions, lock, CountLimit(5, "count budget 5"))
    assert going(out) == ["j00", "j01", "j02", "j03", "j04"]
    assert waiting(out) == [f"j{n:02d}" for n in range(5, 12)]
    assert (held.ready, len(held.held)) == (12, 7)
    wait = out[5]
    assert isinstance(wait, Wait) and not wait.settled  # --wait goes on with another round
    assert wait.reason == "ready; waits for the next round (count budget 5 reached this round)"
    assert [a.job for a in out] == [a.job for a in actions]  # the round's order is kept
    assert (
        summary(12, 5, "count budget 5")
        == "submitted 5 of 12 ready jobs; the rest go in the next round (count budget 5)"
    )


def test_without_a_limit_nothing_waits() -> None:
    lock = jobs({"name": "a"}, {"name": "b"})
    actions: list[Action] = [first("a"), first("b")]
    out, held = within_count(actions, lock, CountLimit(None))
    assert out == actions and held.held == () and held.ready == 2


def test_a_chain_counts_each_link_and_a_chain_in_flight_is_finished_first() -> None:
    lock = jobs({"name": "c", "chain_repeat": 3}, {"name": "a"}, {"name": "b"})
    assert slurm_jobs(first("c"), lock[0]) == 3
    assert slurm_jobs(Submit("c", "links", attempt=1, link=2, after="7"), lock[0]) == 2
    out, _ = within_count([first("c"), first("a"), first("b")], lock, CountLimit(4, "b 4"))
    assert (going(out), waiting(out)) == (["c", "a"], ["b"])
    # The missing links of a chain already submitted go first and use the budget.
    actions: list[Action] = [
        first("a"),
        first("b"),
        Submit("c", "links", attempt=1, link=2, after="7"),
    ]
    out, _ = within_count(actions, lock, CountLimit(3, "b 3"))
    assert (going(out), waiting(out)) == (["a", "c"], ["b"])


def test_a_chain_longer_than_max_submit_goes_alone_but_not_past_the_site_limit() -> None:
    lock = jobs({"name": "c", "chain_repeat": 3}, {"name": "a"})
    actions: list[Action] = [first("c"), first("a")]
    out, _ = within_count(actions, lock, CountLimit(2, "count budget 2"))
    assert (going(out), waiting(out)) == (["c"], ["a"])
    out, _ = within_count(actions, lock, CountLimit(2, "site", site=True))
    assert (going(out), waiting(out)) == ([], ["c", "a"])


def test_array_members_count_one_task_each_and_a_partial_array_keeps_the_lowest() -> None:
    lock = jobs(*({"name": f"t{n}", "array_group": "g", "array_index": n} for n in range(6)))
    out, _ = within_count([first(job.name) for job in lock], lock, CountLimit(4, "b 4"))
    assert going(out) == ["t0", "t1", "t2", "t3"]


def test_a_job_gated_on_one_held_this_round_is_held_too() -> None:
    # `dependency: slurm`: b would be queued behind a's job id, which a held job has not.
    lock = jobs(
        {"name": "x"},
        {"name": "a"},
        {"name": "b", "depends_on": ["a"], "dependency": "slurm"},
    )
    actions: list[Action] = [first("x"), first("a"), first("b", upstream_ids=("job:a",))]
    out, _ = within_count(actions, lock, CountLimit(1, "b 1"))
    assert (going(out), waiting(out)) == (["x"], ["a", "b"])
    out, _ = within_count(actions, lock, CountLimit(2, "b 2"))
    assert (going(out), waiting(out)) == (["x", "a"], ["b"])


def test_a_retried_attempt_that_waits_shows_the_attempt_before_it() -> None:
    lock = jobs({"name": "a"}, {"name": "b"})
    actions: list[Action] = [first("a"), Submit("b", "restart", attempt=3)]
    out, _ = within_count(actions, lock, CountLimit(1, "b 1"))
    assert isinstance(out[1], Wait) and out[1].attempt == 2
