"""A Megatron job that loads another job's checkpoint with another learning-rate schedule is
a compile error unless a flag says which schedule wins (Megatron's scheduler would assert)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oellm.compiler.megatron_checks import scheduler_state
from tests.compiler.test_presets import CLUSTERS, env_for
from tests.helpers import EXAMPLES, compile_error, compile_file, rendered, write

TWO_STAGES = """
# @package _global_
defaults:
  - /backend: megatron
project: {{name: sched}}
job:
  name: sched_${{stage}}
backend:
  megatron:
    num_layers: 2
    hidden_size: 128
    num_attention_heads: 4
    seq_length: 256
    max_position_embeddings: 256
    micro_batch_size: 1
    global_batch_size: 8
    lr: 1.0e-4
    tokenizer_type: NullTokenizer
    vocab_size: 4096
    mock_data: true
sweep:
  type: list
  groups:
    - params: {{backend.megatron.seed: [7]}}
      defaults:
        stage: stable
        backend.megatron.train_iters: 100
        backend.megatron.lr_decay_style: constant
    - params: {{backend.megatron.seed: [7]}}
      defaults:
        stage: decay
        backend.megatron.train_iters: {decay_iters}
        backend.megatron.lr_decay_style: {decay_style}
        backend.megatron.load: "{load}"
{extra}"""
SIBLING = "\\\\${sibling.stable.output_dir}/checkpoints"


def two_stages(
    tmp_path: Path,
    decay_iters: int = 120,
    decay_style: str = "linear",
    load: str = SIBLING,
    extra: str = "",
) -> Path:
    text = TWO_STAGES.format(
        decay_iters=decay_iters, decay_style=decay_style, load=load, extra=extra
    )
    return write(tmp_path / "exp.yaml", text)


def flag(name: str) -> str:
    return f"        backend.megatron.{name}: true\n"


def test_decay_with_another_schedule_and_no_flag_is_an_error(tmp_path: Path) -> None:
    path = two_stages(tmp_path)
    text = rendered(compile_error(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    (line,) = [n for n, text in enumerate(lines, 1) if "backend.megatron.load:" in text]
    assert text.startswith(f"{path}:{line}:9: backend.megatron.load: job 'sched_decay' loads")
    assert "'sched_stable'" in text
    assert "lr_decay_style 'constant' -> 'linear'" in text
    # Steps count samples: train_iters x global_batch_size.
    assert "lr_decay_steps 800 -> 960" in text and "wd_incr_steps 800 -> 960" in text
    assert "override_opt_param_scheduler: true" in text
    assert "use_checkpoint_opt_param_scheduler: true" in text


@pytest.mark.parametrize(
    "extra",
    [
        flag("override_opt_param_scheduler"),
        flag("use_checkpoint_opt_param_scheduler"),
        # Megatron loads no scheduler state under --finetune or --no-load-optim.
        flag("finetune"),
        flag("no_load_optim"),
    ],
)
def test_a_flag_that_settles_the_schedule_compiles(tmp_path: Path, extra: str) -> None:
    bundle = compile_file(two_stages(tmp_path, extra=extra), env={})
    decay = bundle.files["jobs/sched_decay.sbatch"].decode()
    name = extra.split(".")[-1].split(":")[0]
    assert ("--" + name.replace("_", "-")).replace("opt-param", "opt_param") in decay


def test_the_same_schedule_needs_no_flag(tmp_path: Path) -> None:
    compile_file(two_stages(tmp_path, decay_iters=100, decay_style="constant"), env={})


def test_both_flags_are_an_error(tmp_path: Path) -> None:
    extra = flag("override_opt_param_scheduler") + flag("use_checkpoint_opt_param_scheduler")
    text = rendered(compile_error(two_stages(tmp_path, extra=extra)))
    assert "both set" in text and "hint:" in text


def test_a_load_by_path_of_another_job_is_checked_too(tmp_path: Path) -> None:
    path = two_stages(tmp_path, load="./output/sched_stable/checkpoints/")
    text = rendered(compile_error(path))
    assert "job 'sched_decay' loads the checkpoint of job 'sched_stable'" in text


def test_a_load_from_outside_the_bundle_is_not_checked(tmp_path: Path) -> None:
    compile_file(two_stages(tmp_path, load="/pretrained/checkpoints"), env={})


def test_a_job_loading_its_own_save_is_not_checked(tmp_path: Path) -> None:
    # Each job loads its own save (the backend's default): schedules differ between the
    # stages, but nobody loads anybody else's checkpoint.
    compile_file(two_stages(tmp_path, load="\\\\${backend.megatron.save}"), env={})


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_example_decay_overrides_the_schedule(name: str) -> None:
    bundle = compile_file(EXAMPLES / "clusters" / f"{name}.yaml", env=env_for(name))
    for job in bundle.lock_json["jobs"]:
        script = bundle.files[job["script"]].decode()
        assert ("--override-opt_param-scheduler" in script) == (job["stage"] == "decay")


def test_scheduler_state_follows_megatron() -> None:
    base = {"lr": 3e-4, "train_iters": 1000, "global_batch_size": 4, "lr_warmup_iters": 10}
    state = scheduler_state(base)
    assert state == {
        "max_lr": 3e-4,
        "min_lr": 0.0,
        "lr_warmup_steps": 40,
        "lr_decay_steps": 4000,
        "lr_decay_style": "linear",
        "start_wd": 0.01,
        "end_wd": 0.01,
        "wd_incr_steps": 4000,
        "wd_incr_style": "constant",
    }
    assert scheduler_state({**base, "lr_decay_iters": 500})["lr_decay_steps"] == 2000
    assert scheduler_state({**base, "lr_warmup_fraction": 0.1})["lr_warmup_steps"] == 400.0
    samples = scheduler_state({"lr": 1.0, "train_samples": 900, "lr_warmup_samples": 9})
    assert (samples["lr_decay_steps"], samples["lr_warmup_steps"]) == (900, 9)
    linear_wd = scheduler_state(
        {
            **base,
            "weight_decay_incr_style": "linear",
            "start_weight_decay": 0.0,
            "end_weight_decay": 0.1,
        }
    )
    assert (linear_wd["start_wd"], linear_wd["end_wd"]) == (0.0, 0.1)
