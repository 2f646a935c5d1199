"""`oellm plan` proposes a job array for a stage of single jobs too many for one reconcile
round (its count budget, capped by the site's max_jobs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from oellm.cli import main
from oellm.compiler.plan import SUBMITS_PER_ROUND, plan_text
from oellm.lockfile.codec import loads
from oellm.lockfile.model import ArrayGroup, Lock, LockJob, Project
from tests.helpers import write


def lock(stages: dict[str, int], max_jobs: int | None = None, **job: Any) -> Lock:
    jobs = tuple(
        LockJob(
            name=f"{stage}_{n}",
            script=f"jobs/{stage}_{n}.sbatch",
            sha256="0" * 64,
            output_dir="out",
            log_path="out/log",
            stage=stage,
            params={"vars.i": n},
            **job,
        )
        for stage, count in stages.items()
        for n in range(count)
    )
    return Lock("", Project("p", "out", "out/.oellm", max_jobs=max_jobs), jobs)


def proposals(text: str) -> list[str]:
    return [line for line in text.splitlines() if "set slurm.array: true" in line]


def test_a_stage_past_one_round_gets_an_array_proposal_with_its_rounds() -> None:
    text = plan_text(lock({"train": 10_000, "eval": 3}, max_jobs=20_000))
    assert proposals(text) == [
        "stage train: 10,000 jobs would take 20 rounds at 500 per round; set slurm.array: "
        "true to submit them as one job array"
    ]


def test_the_site_limit_caps_the_jobs_per_round() -> None:
    text = plan_text(lock({"train": 450}, max_jobs=200))
    assert proposals(text) == [
        "stage train: 450 jobs would take 3 rounds at 200 per round; set slurm.array: true "
        "to submit them as one job array"
    ]


def test_chain_links_count_and_a_stage_that_fits_one_round_gets_none() -> None:
    assert proposals(plan_text(lock({"train": SUBMITS_PER_ROUND}))) == []
    chained = proposals(plan_text(lock({"train": 300}, chain_repeat=2)))
    assert chained and chained[0].startswith("stage train: 600 jobs would take 2 rounds")


def test_array_members_get_no_proposal() -> None:
    data = lock({"train": 1_000}, array_group="train-1")
    data = dataclasses.replace(
        data, arrays={"train-1": ArrayGroup("train-1", "jobs/a.sbatch", "0" * 64, 1_000, None)}
    )
    assert proposals(plan_text(data)) == []


def test_oellm_plan_of_a_bundle_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ", ".join(str(n) for n in range(SUBMITS_PER_ROUND + 1))
    write(
        tmp_path / "exp.yaml",
        f"""
        project: {{name: wide}}
        stage: sweep
        job: {{name: "w_${{vars.i}}"}}
        vars: {{i: 0}}
        backend: {{bash: {{command: "echo ${{vars.i}}"}}}}
        sweep:
          params: {{vars.i: [{values}]}}
        """,
    )
    assert main(["compile", str(tmp_path / "exp.yaml"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "b")]) == 0
    assert proposals(capsys.readouterr().out) == [
        "stage sweep: 501 jobs would take 2 rounds at 500 per round; set slurm.array: true "
        "to submit them as one job array"
    ]
    assert proposals((tmp_path / "b" / "plan.txt").read_text()) == proposals(
        plan_text(loads((tmp_path / "b" / "plan.lock.json").read_bytes(), "plan.lock.json"))
    )


def test_plan_json_texts_are_those_of_json_dumps() -> None:
    import json

    from oellm.compiler.plan import _json

    values: list[object] = ["x", "ünï", 'q"\n', 1, -5, 10**20, 1.5, True, None, [1, "b"], {"b": 1}]
    for value in values:
        assert _json(value) == json.dumps(value, sort_keys=True), value
