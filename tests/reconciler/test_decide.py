"""decide() is pure: every situation is a case file (lock, history, observation, now) with the
actions and reasons it must give. One generic test runs them all."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from oellm.reconciler.actions import OBSERVATIONS
from oellm.reconciler.decide import decide
from oellm.reconciler.model import (
    Attempt,
    Dropped,
    History,
    Link,
    LockJob,
    LogLine,
    LogRead,
    Markers,
    Observation,
    RestartPolicy,
)
from oellm.reconciler.observe import tags_of
from oellm.reconciler.recover import index_tags
from oellm.reconciler.schedulers import SchedulerJob

CASES = sorted((Path(__file__).parent / "decide_cases").glob("*.yaml"))
NOW = "2026-11-26T12:00:00+00:00"


DEFAULT_RESTART = {"on": ["TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"], "max_attempts": 5}


def lock_job(spec: dict[str, Any]) -> LockJob:
    """The case's job: the lockfile model's defaults, and what the case sets."""
    name = spec["name"]
    return LockJob(
        name=name,
        script=f"jobs/{name}.sbatch",
        sha256=spec.get("sha256", "0" * 64),
        output_dir=f"out/{name}",
        log_path="out/x.log",
        stage=spec.get("stage"),
        depends_on=tuple(spec.get("depends_on", [])),
        start_conditions=tuple(spec.get("start_conditions", [])),
        cancel_conditions=tuple(spec.get("cancel_conditions", [])),
        chain_repeat=spec.get("chain_repeat", 1),
        restart=RestartPolicy.from_json(spec.get("restart", DEFAULT_RESTART)),
        log_events=tuple(spec.get("log_events", [])),
        state_events=tuple(spec.get("state_events", [])),
        dependency=spec.get("dependency", "reconciler"),
        array_group=spec.get("array_group"),
        array_index=spec.get("array_index"),
        array_throttle=spec.get("array_throttle"),
        finish_condition=spec.get("finish_condition"),
    )


def attempt(job: str, spec: dict[str, Any], chain_repeat: int = 1) -> Attempt:
    tag = f"oellm.0a1b2c3d.{job}.{spec.get('attempt', 1)}"
    defaults: dict[str, Any] = {
        "job": job,
        "attempt": 1,
        "tag": tag,
        "bundle_id": "b" * 64,
        "script_sha256": "0" * 64,
        "scheduler": "slurm",
        "cause": "first submission",
        "phase": "submitted",
        "intent_at": "2026-11-26T11:50:00+00:00",
    }
    if spec.get("links"):
        defaults["chain_repeat"] = chain_repeat
        defaults["job_id"] = spec["links"][0].get("job_id")
        spec = {**spec, "links": [link(tag, x) for x in spec["links"]]}
    return Attempt(**{**defaults, **spec})


def link(tag: str, spec: dict[str, Any]) -> Link:
    """A chain link of a case file: `{link: 2, job_id: "12"}` is link 2, submitted as job 12;
    without a job id it is an intent; with `state` it has ended."""
    number = spec["link"]
    defaults: dict[str, Any] = {
        "tag": tag if number == 1 else f"{tag}.link{number}",
        "phase": "finished" if "state" in spec else ("submitted" if "job_id" in spec else "intent"),
        "intent_at": "2026-11-26T11:50:00+00:00",
    }
    return Link(**{**defaults, **spec})


def row(spec: dict[str, Any]) -> SchedulerJob:
    return SchedulerJob(**{"name": "", "state": "PENDING", **spec})


def load_case(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return data


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case(path: Path) -> None:
    case = load_case(path)
    jobs = [lock_job(j) for j in case["jobs"]]
    repeats = {j.name: j.chain_repeat for j in jobs}
    history = History(
        attempts={
            job: tuple(attempt(job, a, repeats.get(job, 1)) for a in attempts)
            for job, attempts in (case.get("history") or {}).items()
        },
        dropped={
            job: Dropped(job, reason, "2026-11-26T11:00:00+00:00")
            for job, reason in (case.get("dropped") or {}).items()
        },
        damaged=case.get("damaged") or {},
    )
    seen = case.get("observation") or {}
    rows = [row(r) for r in seen.get("rows", [])]
    logs = {
        job: LogRead(
            tuple(
                LogLine(line.get("file", "log"), line["offset"], line["text"], line.get("link", 0))
                for line in lines
            ),
            {},
            None,
        )
        for job, lines in (seen.get("logs") or {}).items()
    }
    obs = Observation(
        asked=True,
        available=seen.get("available", True),
        by_id={r.job_id: r for r in rows},
        by_tag=tags_of(rows),
        markers={k: Markers(**v) for k, v in (seen.get("markers") or {}).items()},
        files=seen.get("files") or {},
        commands={tuple(k.split(" ")): v for k, v in (seen.get("commands") or {}).items()},
        logs=logs,
        log_growth={
            k: datetime.fromisoformat(v) for k, v in (seen.get("log_growth") or {}).items()
        },
        progress=seen.get("progress") or {},
        submissions=index_tags(rows, "oellm.0a1b2c3d."),
    )
    now = datetime.fromisoformat(case.get("now", NOW))
    got = decide(jobs, history, obs, now)
    mains = [a for a in got if a.kind not in OBSERVATIONS]
    assert [a.job for a in mains] == [j.name for j in jobs], "one main action per job"
    if not case.get("observations"):
        got = mains
    expected = case["expect"]
    assert len(got) == len(expected), got
    for action, want in zip(got, expected, strict=True):
        assert action.job == want["job"]
        assert action.kind == want["kind"], action
        for field in (
            "attempt",
            "job_id",
            "state",
            "exit_code",
            "settled",
            "outcome",
            "link",
            "after",
        ):
            if field in want:
                assert getattr(action, field) == want[field], action
        if "upstream_ids" in want:
            assert list(action.upstream_ids) == want["upstream_ids"], action
        if "job_ids" in want:
            assert list(action.job_ids) == want["job_ids"], action
        assert want["reason"] in action.reason, action
        for key, value in want.get("event", {}).items():
            assert action.event.get(key) == value, action


def test_a_decision_leaves_nothing_for_the_garbage_collector() -> None:
    """What decide made is freed as soon as it is dropped (no reference cycle, `decide._plan`):
    a round runs without the garbage collector (reconcile_cli)."""
    import gc

    jobs = [lock_job({"name": "a"}), lock_job({"name": "b", "depends_on": ["a"]})]
    history = History({"a": (attempt("a", {"phase": "submitted", "job_id": "7"}),)}, {})
    queued = row({"job_id": "7", "name": "x", "state": "PENDING"})
    obs = Observation(True, True, by_id={"7": queued})
    gc.collect()
    gc.disable()
    try:
        actions = decide(jobs, history, obs, datetime.fromisoformat(NOW))
        assert [a.job for a in actions if a.kind == "wait"] == ["a", "b"]
        del actions
        assert gc.collect() == 0
    finally:
        gc.enable()
