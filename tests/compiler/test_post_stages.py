"""Stages after training: `megatron_to_hf` converts a checkpoint, `lm_eval` evaluates the result.

The compiled scripts run with the real bash and a fake converter and a fake `lm_eval` (each a
tiny script that records its argv), so the tests compare what the programs would receive.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler.pipeline import CompiledBundle
from tests.compiler.hostile import HOSTILE, bash_syntax_errors
from tests.helpers import EXAMPLES, compile_error, compile_file, rendered, write

TINY = EXAMPLES / "megatron_tiny_eval.yaml"
LEONARDO = EXAMPLES / "clusters" / "leonardo.yaml"

RECORDER = """#!/bin/bash
# Records its argv and environment, NUL-separated.
for word in "$@"; do printf '%s\\0' "$word"; done > "$OELLM_FAKE_LOG/{name}.argv"
env -0 > "$OELLM_FAKE_LOG/{name}.env"
"""


def recorder(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RECORDER.format(name=name))
    path.chmod(0o755)
    return path


def jobs_by_stage(bundle: CompiledBundle) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for job in bundle.lock_json["jobs"]:
        out.setdefault(job["stage"], []).append(job)
    return out


def script_of(bundle: CompiledBundle, job: dict[str, Any]) -> str:
    return str(bundle.files[job["script"]].decode())


def run(script: str, where: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run a job script as SLURM would (with `slurm.use_srun: false`: no srun to fake)."""
    path = write(where / "job.sbatch", "")
    path.write_text(script)
    assert bash_syntax_errors(path) == ""
    log = where / "log"
    log.mkdir(exist_ok=True)
    full = {
        "PATH": f"{where / 'fakes'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(where),
        "LANG": "C.UTF-8",
        "SLURM_JOB_ID": "4242",
        "OELLM_FAKE_LOG": str(log),
        **env,
    }
    return subprocess.run(
        ["bash", str(path)], cwd=where, env=full, capture_output=True, timeout=30, check=False
    )


def argv(where: Path, name: str) -> list[str]:
    data = (where / "log" / f"{name}.argv").read_bytes()
    return [word.decode() for word in data.split(b"\0")[:-1]]


def environ(where: Path, name: str) -> dict[str, str]:
    data = (where / "log" / f"{name}.env").read_bytes()
    pairs = (entry.decode().partition("=") for entry in data.split(b"\0") if entry)
    return {key: value for key, _, value in pairs}


# --- The examples: each stage reads the one before, and waits for it ----------------------


@pytest.mark.parametrize(
    ("path", "trained"), [(TINY, "train"), (LEONARDO, "decay")], ids=["tiny", "leonardo"]
)
def test_examples_convert_the_trained_checkpoint_and_evaluate_the_result(
    path: Path, trained: str, tmp_path: Path
) -> None:
    bundle = compile_file(path, env={})
    stages = jobs_by_stage(bundle)
    by_name = {job["name"]: job for job in bundle.lock_json["jobs"]}
    assert len(stages["convert"]) == len(stages["eval"]) == len(stages[trained])
    for job in bundle.lock_json["jobs"]:
        target = write(tmp_path / "job.sbatch", "")
        target.write_bytes(bundle.files[job["script"]])
        assert bash_syntax_errors(target) == "", job["name"]
    for convert in stages["convert"]:
        (source,) = convert["depends_on"]
        assert by_name[source]["stage"] == trained
        lr = "backend.megatron.lr"
        assert by_name[source]["params"].get(lr) == convert["params"].get(lr)
        save = by_name[source]["output_dir"] + "/checkpoints"
        script = script_of(bundle, convert)
        # The shim gets the save folder; the converter the output folder of this job.
        assert f" oellm-convert {save} --megatron-path \\\n" in script
        assert f"\n  --hf-path={convert['output_dir']}/hf\n" in script
        assert convert["finish_condition"]["path"] == f"{convert['output_dir']}/hf/config.json"
    for evaluation in stages["eval"]:
        (source,) = evaluation["depends_on"]
        assert by_name[source]["stage"] == "convert"
        lr = "backend.megatron.lr"
        assert by_name[source]["params"].get(lr) == evaluation["params"].get(lr)
        script = script_of(bundle, evaluation)
        hf = by_name[source]["output_dir"] + "/hf"
        assert f"\n  --model_args=pretrained={hf},dtype=bfloat16 \\\n" in script
        assert f"\n  --output_path={evaluation['output_dir']}/lm_eval\n" in script


def test_the_lm_eval_script_hands_the_harness_the_sibling_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bundle = compile_file(TINY, ["slurm.use_srun=false"], env={"OUTPUT_DIR": str(out)})
    (evaluation,) = jobs_by_stage(bundle)["eval"]
    recorder(tmp_path / "fakes" / "lm_eval", "lm_eval")
    done = run(script_of(bundle, evaluation), tmp_path, {})
    assert done.returncode == 0, done.stderr.decode()
    assert argv(tmp_path, "lm_eval") == [
        "--model=hf",
        f"--model_args=pretrained={out}/megatron_tiny_eval_convert/hf,dtype=bfloat16",
        "--tasks=hellaswag,arc_easy",
        "--num_fewshot=0",
        "--batch_size=auto",
        "--limit=100",
        f"--output_path={out}/megatron_tiny_eval_eval/lm_eval",
    ]


def test_the_lm_eval_group_makes_the_harness_offline(tmp_path: Path) -> None:
    experiment = write(
        tmp_path / "exp.yaml",
        """
        defaults:
          - /backend: lm_eval
        project: {name: ev}
        slurm: {use_srun: false}
        backend:
          lm_eval:
            pretrained: /models/gpt
            tasks: [piqa]
            log_samples: true
            trust_remote_code: true
            options: {seed: 1234, use_cache: null}
        """,
    )
    hf_home = str(tmp_path / "hf")
    bundle = compile_file(experiment, env={"HF_HOME": hf_home, "OUTPUT_DIR": str(tmp_path)})
    (job,) = bundle.lock_json["jobs"]
    recorder(tmp_path / "fakes" / "lm_eval", "lm_eval")
    done = run(script_of(bundle, job), tmp_path, {})
    assert done.returncode == 0, done.stderr.decode()
    assert argv(tmp_path, "lm_eval") == [
        "--model=hf",
        "--model_args=pretrained=/models/gpt",
        "--tasks=piqa",
        "--batch_size=auto",
        "--device=cuda",
        f"--output_path={tmp_path}/ev/lm_eval",
        "--log_samples",
        "--trust_remote_code",
        "--seed=1234",
    ]
    env = environ(tmp_path, "lm_eval")
    assert env["HF_HOME"] == hf_home
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"


# --- The converter: the latest iteration's folder, read when the job starts ------------------


def converter_run(tmp_path: Path, tracker: str | None) -> subprocess.CompletedProcess[bytes]:
    bridge = tmp_path / "bridge"
    recorder(bridge / "scripts" / "conversion" / "convert.sh", "convert")
    env = {
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MEGATRON_BRIDGE_DIR": str(bridge),
        "HF_REFERENCE": "/models/reference",
    }
    bundle = compile_file(TINY, ["slurm.use_srun=false"], env=env)
    (convert,) = jobs_by_stage(bundle)["convert"]
    save = tmp_path / "out" / "megatron_tiny_eval_train" / "checkpoints"
    save.mkdir(parents=True)
    if tracker is not None:
        # Megatron writes the tracker without a newline.
        (save / "latest_checkpointed_iteration.txt").write_text(tracker)
    return run(script_of(bundle, convert), tmp_path, {})


@pytest.mark.parametrize(
    ("tracker", "folder"), [("100", "iter_0000100"), ("7", "iter_0000007"), ("release", "release")]
)
def test_the_converter_gets_the_folder_of_the_latest_iteration(
    tracker: str, folder: str, tmp_path: Path
) -> None:
    done = converter_run(tmp_path, tracker)
    assert done.returncode == 0, done.stderr.decode()
    save = tmp_path / "out" / "megatron_tiny_eval_train" / "checkpoints"
    assert argv(tmp_path, "convert") == [
        "export",
        "--executor",
        "local",
        "--device",
        "cpu",
        "--hf-model=/models/reference",
        f"--hf-path={tmp_path}/out/megatron_tiny_eval_convert/hf",
        f"--megatron-path={save}/{folder}",
    ]


@pytest.mark.parametrize("tracker", [None, "", "12abc", "-1"])
def test_without_a_readable_iteration_the_converter_does_not_run(
    tracker: str | None, tmp_path: Path
) -> None:
    done = converter_run(tmp_path, tracker)
    assert done.returncode == 1
    assert not (tmp_path / "log" / "convert.argv").exists()
    assert b"latest_checkpointed_iteration.txt" in done.stderr
    exit_marker = tmp_path / "out" / "megatron_tiny_eval_convert" / ".oellm" / "4242.exit"
    assert exit_marker.read_text() == "1\n"


@pytest.mark.parametrize("value_id", [k for k, v in HOSTILE.items() if v])
def test_the_latest_iteration_shim_keeps_hostile_folders_whole(
    value_id: str, tmp_path: Path
) -> None:
    value = HOSTILE[value_id]
    fake = recorder(tmp_path / "fakes" / "converter", "convert")
    experiment = write(
        tmp_path / "exp.yaml",
        f"""
        defaults:
          - /backend: megatron_to_hf
        project: {{name: cv}}
        slurm: {{use_srun: false}}
        backend:
          megatron_to_hf:
            command: [{fake}]
            checkpoint: "${{oc.env:HOSTILE}}"
            checkpoint_flag: --load-dir
            options: {{hf-model: /ref}}
        """,
    )
    bundle = compile_file(experiment, env={"HOSTILE": value, "OUTPUT_DIR": str(tmp_path)})
    (job,) = bundle.lock_json["jobs"]
    save = tmp_path / value
    save.mkdir(parents=True, exist_ok=True)
    (save / "latest_checkpointed_iteration.txt").write_text("5")
    done = run(script_of(bundle, job), tmp_path, {})
    assert done.returncode == 0, done.stderr.decode()
    assert argv(tmp_path, "convert") == [
        "--hf-model=/ref",
        f"--hf-path={tmp_path}/cv/hf",
        f"--load-dir={value}/iter_0000005",
    ]


@pytest.mark.parametrize(
    ("iteration", "last"),
    [("null", "--megatron-path=/ckpt/"), ("250", "--megatron-path=/ckpt/iter_0000250")],
)
def test_a_fixed_iteration_or_the_folder_itself_needs_no_shim(
    iteration: str, last: str, tmp_path: Path
) -> None:
    experiment = write(
        tmp_path / "exp.yaml",
        f"""
        defaults:
          - /backend: megatron_to_hf
        project: {{name: cv}}
        backend:
          megatron_to_hf:
            command: [python, convert.py]
            checkpoint: /ckpt/
            iteration: {iteration}
            options: {{hf-model: /ref, tp: 2, strict: true, dry: false}}
        """,
    )
    bundle = compile_file(experiment, env={"OUTPUT_DIR": "/out"})
    (job,) = bundle.lock_json["jobs"]
    script = script_of(bundle, job)
    assert "latest_checkpointed_iteration" not in script
    assert script.split("set +e\n")[1].split("\noellm_exit")[0] == (
        "srun \\\n  python convert.py \\\n  --hf-model=/ref \\\n  --tp=2 \\\n  --strict \\\n"
        f"  --hf-path=/out/cv/hf \\\n  {last}"
    )


# --- Mistakes are compile errors at the key -----------------------------------------------


def test_unknown_keys_are_named_where_written_with_a_suggestion(tmp_path: Path) -> None:
    experiment = write(
        tmp_path / "exp.yaml",
        """
        project: {name: ev}
        backend:
          kind: lm_eval
          lm_eval:
            pretrained: /models/gpt
            tasks: [piqa]
            num_fewshots: 5
          megatron_to_hf:
            command: [convert]
            checkpoint: /ckpt
            output_dri: /out
          bash: {command: "true"}
        """,
    )
    text = rendered(compile_error(experiment))
    assert "exp.yaml:7:5: backend.lm_eval: unknown key 'num_fewshots'" in text
    assert "did you mean 'num_fewshot'?" in text
    assert "exp.yaml:11:5: backend.megatron_to_hf: unknown key 'output_dri'" in text
    assert "did you mean 'output_dir'?" in text


@pytest.mark.parametrize(
    ("iteration", "message"),
    [
        ("last", '"last" does not match the pattern ^latest(?!\\n)$'),
        ("-3", "-3 is too small (minimum 0)"),
        ("1.5", "expected string or integer or null, got 1.5"),
    ],
)
def test_an_iteration_is_latest_a_number_or_null(
    iteration: str, message: str, tmp_path: Path
) -> None:
    experiment = write(
        tmp_path / "exp.yaml",
        f"""
        defaults:
          - /backend: megatron_to_hf
        project: {{name: cv}}
        backend:
          megatron_to_hf: {{checkpoint: /c, iteration: {iteration}, options: {{hf-model: /r}}}}
        """,
    )
    text = rendered(compile_error(experiment))
    assert f"exp.yaml:5:36: backend.megatron_to_hf.iteration: {message}" in text


def test_values_lm_eval_would_split_or_refuse_are_compile_errors(tmp_path: Path) -> None:
    experiment = write(
        tmp_path / "exp.yaml",
        """
        defaults:
          - /backend: lm_eval
        project: {name: ev}
        backend:
          lm_eval:
            pretrained: /models/a,b
            model_args: {tokenizer: "/tok,x"}
            tasks: [piqa, "arc_easy,arc_challenge"]
            output_path: null
            log_samples: true
        """,
    )
    text = rendered(compile_error(experiment))
    assert "exp.yaml:6:5: backend.lm_eval.pretrained: '/models/a,b' holds a comma" in text
    assert "exp.yaml:7:18: backend.lm_eval.model_args.tokenizer: '/tok,x' holds a comma" in text
    assert "exp.yaml:8:19: backend.lm_eval.tasks.1: task 'arc_easy,arc_challenge'" in text
    assert "exp.yaml:10:5: backend.lm_eval.log_samples: lm_eval's --log_samples needs" in text


SETTINGS = {
    "lm_eval": "{pretrained: /m, tasks: [piqa]}",
    "megatron_to_hf": "{checkpoint: /ckpt, options: {hf-model: /ref}}",
}


@pytest.mark.parametrize("backend", ["lm_eval", "megatron_to_hf"])
def test_a_program_that_runs_once_is_refused_more_srun_tasks(backend: str, tmp_path: Path) -> None:
    """A preset made for training starts a task per GPU; each would run the whole program."""
    experiment = write(
        tmp_path / "exp.yaml",
        f"""
        defaults:
          - /slurm: juwels
          - /backend: {backend}
        project: {{name: once}}
        slurm: {{sbatch: {{nodes: 2}}}}
        backend: {{{backend}: {SETTINGS[backend]}}}
        """,
    )
    text = rendered(compile_error(experiment, env={"SLURM_ACCOUNT": "a"}))
    assert "juwels.yaml:12:1: slurm.launch: per_gpu starts one task per GPU" in text
    assert (
        "hint: run it as one task: slurm.launch: plain and slurm.sbatch.ntasks_per_node: 1" in text
    )
    assert "slurm.sbatch.ntasks_per_node: 4 ntasks per node: srun would run the" in text
    assert "exp.yaml:5:18: slurm.sbatch.nodes: 2 nodes: srun would run the" in text
    one_task = ["slurm.launch=plain", "slurm.sbatch.ntasks_per_node=1", "slurm.sbatch.nodes=1"]
    compile_file(experiment, one_task, env={"SLURM_ACCOUNT": "a"})


# --- `reads`: what `oellm check` looks for before the job starts ----------------------------


@pytest.mark.parametrize(
    ("backend", "settings", "reads"),
    [
        ("lm_eval", "{pretrained: /models/gpt, tasks: [piqa]}", ["/models/gpt"]),
        ("lm_eval", "{pretrained: EleutherAI/pythia-160m, tasks: [piqa]}", []),
        ("megatron_to_hf", "{checkpoint: /ckpt, options: {hf-model: /ref}}", ["/ckpt"]),
    ],
)
def test_a_checkpoint_no_job_writes_is_read(
    backend: str, settings: str, reads: list[str], tmp_path: Path
) -> None:
    experiment = write(
        tmp_path / "exp.yaml",
        f"""
        defaults:
          - /backend: {backend}
        project: {{name: r}}
        backend: {{{backend}: {settings}}}
        """,
    )
    (job,) = compile_file(experiment, env={"OUTPUT_DIR": "/out"}).lock_json["jobs"]
    assert job.get("reads", []) == reads


def test_a_checkpoint_a_sibling_writes_is_not_read() -> None:
    for job in compile_file(TINY, env={}).lock_json["jobs"]:
        assert "reads" not in job, job["name"]
