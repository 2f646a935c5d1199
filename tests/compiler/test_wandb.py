"""A Megatron job that logs to W&B resumes one run across attempts and chain links: its run id
comes from the job's resolved config, exported as WANDB_RUN_ID with WANDB_RESUME=allow."""

from __future__ import annotations

import re
from pathlib import Path

from tests.compiler.test_presets import ENV, experiment, script_of
from tests.helpers import EXAMPLES, compile_file

WANDB = ["+backend.megatron.wandb_project=gpt"]


def exported(script: str, name: str) -> str | None:
    found = re.findall(rf"^export {name}=(.*)$", script, flags=re.MULTILINE)
    return found[0] if found else None


def test_no_wandb_project_no_run_id(tmp_path: Path) -> None:
    script = script_of(experiment(tmp_path, "megatron"), [])
    assert exported(script, "WANDB_RUN_ID") is None and "--wandb-exp-name" not in script


def test_run_id_resume_and_name(tmp_path: Path) -> None:
    script = script_of(experiment(tmp_path, "megatron"), WANDB)
    run_id = exported(script, "WANDB_RUN_ID")
    assert run_id is not None and re.fullmatch(r"[0-9a-f]{32}", run_id)
    assert exported(script, "WANDB_RESUME") == "allow"
    assert "--wandb-exp-name preset" in script and "--wandb-project gpt" in script


def test_the_id_is_stable_and_changes_with_the_config(tmp_path: Path) -> None:
    path = experiment(tmp_path, "megatron")
    first = exported(script_of(path, WANDB), "WANDB_RUN_ID")
    assert exported(script_of(path, WANDB), "WANDB_RUN_ID") == first
    changed = exported(script_of(path, [*WANDB, "backend.megatron.train_iters=20"]), "WANDB_RUN_ID")
    assert changed != first


def test_each_job_of_a_sweep_has_its_own_run() -> None:
    bundle = compile_file(EXAMPLES / "clusters" / "lumi.yaml", WANDB, env=ENV)
    ids = {
        exported(bundle.files[job["script"]].decode(), "WANDB_RUN_ID")
        for job in bundle.lock_json["jobs"]
    }
    assert len(ids) == 4 and None not in ids


def test_the_config_can_name_the_run_and_choose_resume(tmp_path: Path) -> None:
    overrides = [
        *WANDB,
        "+backend.megatron.wandb_exp_name=mine",
        "+backend.env.WANDB_RESUME=must",
    ]
    script = script_of(experiment(tmp_path, "megatron"), overrides)
    assert "--wandb-exp-name mine" in script and exported(script, "WANDB_RESUME") == "must"
