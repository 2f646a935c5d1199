"""Cluster presets: every preset x backend x container compiles to a reviewed script; the
environment each preset needs is named when missing; launch modes put runtime values (ranks,
rendezvous) into the script, never into config words; site limits are checked.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler.errors import ConfigError
from oellm.compiler.limits import check_bundle_limits, max_array_index
from oellm.compiler.script import RANK_SHIM
from oellm.lockfile.model import LockJob
from tests.compiler.hostile import HOSTILE, bash_syntax_errors, install_fakes
from tests.helpers import CLUSTERS, EXAMPLES, PRESETS, REPO, compile_file, rendered, write

SLURM = REPO / "config" / "slurm"
# What each preset cannot compile without; CONTAINER_CACHE_DIR is the container presets' need.
REQUIRED: dict[str, tuple[str, ...]] = {
    "local": (),
    "lumi": ("SLURM_ACCOUNT",),
    "leonardo": ("SLURM_ACCOUNT",),
    "juwels": ("SLURM_ACCOUNT",),
    "jupiter": ("SLURM_ACCOUNT",),
    "marenostrum5": ("SLURM_ACCOUNT", "SLURM_QOS"),
    "snellius": (),
}
ENV = {"SLURM_ACCOUNT": "project_0000", "CONTAINER_CACHE_DIR": "/containers"}
QOS = {"SLURM_QOS": "acc_ehpc"}


def env_for(preset: str) -> dict[str, str]:
    """The environment a user of `preset` exports (MareNostrum 5 also needs a QoS)."""
    return {**ENV, **(QOS if preset == "marenostrum5" else {})}


EXPERIMENT = """
# @package _global_
defaults:
  - /backend: {backend}
project: {{name: preset}}
"""
MEGATRON_ARGS = """
backend:
  megatron:
    num_layers: 2
    hidden_size: 128
    num_attention_heads: 4
    seq_length: 256
    max_position_embeddings: 256
    micro_batch_size: 1
    global_batch_size: 8
    train_iters: 10
    data_path: ["/data/corpus_text_document"]
    tokenizer_type: HuggingFaceTokenizer
    tokenizer_model: /data/tokenizer
"""
BASH_ARGS = """
backend:
  bash:
    command: nvidia-smi
"""


def experiment(tmp_path: Path, backend: str, extra: str = "") -> Path:
    args = MEGATRON_ARGS if backend == "megatron" else BASH_ARGS
    return write(tmp_path / "exp.yaml", EXPERIMENT.format(backend=backend) + args + extra)


def script_of(path: Path, overrides: list[str], env: dict[str, str] | None = None) -> str:
    bundle = compile_file(path, overrides, ENV if env is None else env)
    (name,) = [n for n in bundle.files if n.startswith("jobs/") and n.endswith(".sbatch")]
    return bundle.files[name].decode()


def container_of(preset: str) -> str:
    # The local cluster has no site image: the generic apptainer preset stands in.
    return "apptainer" if preset == "local" else preset


COMBINATIONS = [
    pytest.param(preset, backend, container, id=f"{preset}-{backend}-{container}")
    for preset in PRESETS
    for backend in ("bash", "megatron")
    for container in ("none", container_of(preset))
]


def test_every_preset_file_is_covered() -> None:
    assert set(REQUIRED) == set(PRESETS), "each preset says what it cannot compile without"


@pytest.mark.parametrize(("preset", "backend", "container"), COMBINATIONS)
def test_preset_script_snapshot(
    preset: str, backend: str, container: str, tmp_path: Path, text_snapshot: Any
) -> None:
    overrides = [f"slurm={preset}", f"container={container}"]
    if container == "apptainer":
        overrides.append("container.image=/containers/train.sif")
    script = script_of(experiment(tmp_path, backend), overrides, env_for(preset))
    assert not bash_syntax_errors(write(tmp_path / "job.sbatch", script))
    assert script == text_snapshot


@pytest.mark.parametrize("preset", CLUSTERS)
def test_cluster_presets_compile_with_documented_env_only(preset: str, tmp_path: Path) -> None:
    path = experiment(tmp_path, "megatron")
    needed = {name: env_for(preset)[name] for name in (*REQUIRED[preset], "CONTAINER_CACHE_DIR")}
    script = script_of(path, [f"slurm={preset}", f"container={preset}"], needed)
    if "SLURM_ACCOUNT" in needed:
        assert "\n#SBATCH --account=project_0000\n" in script
    for name in needed:
        missing = {k: v for k, v in needed.items() if k != name}
        with pytest.raises(ConfigError) as caught:
            compile_file(path, [f"slurm={preset}", f"container={preset}"], missing)
        assert name in rendered(caught.value)


@pytest.mark.parametrize("preset", CLUSTERS)
def test_readme_documents_each_cluster_and_its_env(preset: str) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{preset}` |")]
    assert len(rows) == 1, f"README's cluster table has no row for {preset}"
    for name in REQUIRED[preset]:
        assert f"`{name}`" in rows[0]


@pytest.mark.parametrize("preset", CLUSTERS)
def test_debug_switches_partition_or_qos_and_time(preset: str, tmp_path: Path) -> None:
    path = experiment(tmp_path, "bash")
    env = {**env_for(preset), "SLURM_PARTITION_DEBUG": "dbg"}
    normal = script_of(path, [f"slurm={preset}"], env)
    debug = script_of(path, [f"slurm={preset}", "slurm.debug=true"], env)
    assert "#SBATCH --time=00:30:00" in debug and "#SBATCH --time=00:30:00" not in normal
    changed = {line for line in debug.splitlines() if line.startswith("#SBATCH")} - set(
        normal.splitlines()
    )
    assert any(line.startswith(("#SBATCH --partition=", "#SBATCH --qos=")) for line in changed)


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_example_two_stages_with_sibling_load(name: str) -> None:
    bundle = compile_file(EXAMPLES / "clusters" / f"{name}.yaml", env=env_for(name))
    # The training stages (an example may go on to convert and evaluate: test_post_stages.py).
    training = ("stable", "decay")
    jobs = {job["name"]: job for job in bundle.lock_json["jobs"] if job["stage"] in training}
    assert len(jobs) == 4
    for job in jobs.values():
        script = bundle.files[job["script"]].decode()
        assert "\n#SBATCH --nodes=2\n" in script
        assert f"--save {job['output_dir']}/checkpoints" in script
        if job["stage"] == "stable":
            assert f"--load {job['output_dir']}/checkpoints" in script
            continue
        (stable,) = job["depends_on"]
        assert jobs[stable]["stage"] == "stable"
        # The sibling's checkpoint on the first start; the job's own once it has saved one.
        assert f"oellm_load_initial={jobs[stable]['output_dir']}/checkpoints\n" in script
        assert '--load "${oellm_load}"' in script
        assert jobs[stable]["params"]["backend.megatron.lr"] == job["params"]["backend.megatron.lr"]
        assert "--tokenizer-model ./tokenizer" in script and "--data-path ./data/" in script
        # Each job stops itself before its time limit, by signal or by the clock.
        assert ("--exit-signal-handler" in script) != ("--exit-duration-in-mins" in script)
        if "--exit-signal-handler" in script:
            assert "\n#SBATCH --signal=USR2@600\n" in script


# --- Launch modes: the runtime values come from the script -------------------------------


def run_job(script: str, where: Path, nodelist: str = "node7", nodes: str = "2") -> Path:
    """Run a script with fakes for srun, the container runtimes, python and scontrol, in the
    environment SLURM gives a batch script; returns the folder where the fakes logged."""
    fakes = install_fakes(where / "fakes")
    scontrol = fakes / "scontrol"
    scontrol.write_text(
        '#!/bin/bash\n# hostnames of a node list: here, the list itself\necho "$3"\n'
    )
    scontrol.chmod(0o755)
    log, cwd = where / "log", where / "cwd"
    log.mkdir(parents=True)
    cwd.mkdir()
    path = write(where / "job.sbatch", script)
    assert not bash_syntax_errors(path)
    env = {
        "PATH": f"{fakes}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(where),
        "LANG": "C.UTF-8",
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_JOB_NUM_NODES": nodes,
        "OELLM_FAKE_LOG": str(log),
    }
    done = subprocess.run(
        ["bash", str(path)], cwd=cwd, env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return log


def argv(log: Path, fake: str) -> list[str]:
    return (log / f"{fake}.argv").read_bytes().decode().split("\0")[:-1]


def environ(log: Path, fake: str) -> dict[str, str]:
    pairs = (e.partition("=") for e in (log / f"{fake}.env").read_bytes().decode().split("\0"))
    return {k: v for k, _, v in pairs if k}


HOSTILE_IDS = ["space", "single_quote", "command_substitution", "newline", "dollar_var", "glob"]


@pytest.mark.parametrize("value_id", HOSTILE_IDS)
def test_per_gpu_words_pass_through_the_rank_shim(value_id: str, tmp_path: Path) -> None:
    value = HOSTILE[value_id]
    path = experiment(tmp_path, "megatron", "vars: {v: '${oc.env:HOSTILE}'}\n")
    script = script_of(
        path,
        ["slurm=lumi", "backend.megatron.tokenizer_model=${vars.v}"],
        {**ENV, "HOSTILE": value},
    )
    log = run_job(script, tmp_path / "run")
    words = argv(log, "srun")
    shim = words.index("bash")
    assert words[shim : shim + 6] == ["bash", "-c", RANK_SHIM, "oellm-task", "python", "-u"]
    assert words[words.index("--tokenizer-model") + 1] == value
    env = environ(log, "srun")
    assert env["MASTER_ADDR"] == "node7" and env["MASTER_PORT"] == str(10000 + 123456 % 20000)


@pytest.mark.parametrize("value_id", HOSTILE_IDS)
def test_rank_shim_exports_slurm_task_values_and_keeps_words(value_id: str) -> None:
    value = HOSTILE[value_id]
    env = {"PATH": os.environ["PATH"], "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
    env["SLURM_NTASKS"] = "8"
    probe = 'printf "%s\\0" "$RANK" "$LOCAL_RANK" "$WORLD_SIZE" "$@"'
    done = subprocess.run(
        ["bash", "-c", RANK_SHIM, "oellm-task", "bash", "-c", probe, "probe", value, "x y"],
        env=env,
        capture_output=True,
        timeout=10,
        check=True,
    )
    assert done.stdout.decode().split("\0")[:-1] == ["5", "1", "8", value, "x y"]


def test_per_node_starts_torchrun_at_the_script_rendezvous(tmp_path: Path) -> None:
    path = experiment(tmp_path, "megatron")
    options = [
        "+backend.torchrun.options.tee=3",
        "+backend.torchrun.options.log_dir=${oc.env:HOSTILE}",
    ]
    script = script_of(path, ["slurm=leonardo", *options], {**ENV, "HOSTILE": "a b;$(id)"})
    log = run_job(script, tmp_path / "run", nodelist="lrdn0042", nodes="2")
    words = argv(log, "srun")
    start = words.index("torchrun")
    port = str(10000 + 123456 % 20000)
    assert words[start : start + 16] == [
        "torchrun",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "4",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"lrdn0042:{port}",
        "--rdzv_id",
        "123456",
        "--max_restarts",
        "0",
        "--tee=3",
        "--log_dir=a b;$(id)",
        "/opt/Megatron-LM/pretrain_gpt.py",
    ]


def test_juwels_rendezvous_uses_the_infiniband_name(tmp_path: Path) -> None:
    script = script_of(experiment(tmp_path, "megatron"), ["slurm=juwels"])
    log = run_job(script, tmp_path / "run", nodelist="jwb0001")
    assert environ(log, "srun")["MASTER_ADDR"] == "jwb0001i"


def test_plain_launch_has_no_rendezvous(tmp_path: Path) -> None:
    script = script_of(experiment(tmp_path, "megatron"), [])
    assert "MASTER_ADDR" not in script and "RANK" not in script


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (
            ["slurm=lumi", "slurm.sbatch.ntasks_per_node=4"],
            "slurm.sbatch.ntasks_per_node",
            "one task per GPU",
        ),
        (
            ["slurm=leonardo", "slurm.sbatch.ntasks_per_node=4"],
            "slurm.sbatch.ntasks_per_node",
            "one task per node",
        ),
        (["slurm=lumi", "slurm.use_srun=false"], "slurm.use_srun", "needs srun"),
        (["slurm.launch=per_node"], "slurm.gpus_per_node", "number of GPUs"),
        (
            [
                "slurm=leonardo",
                "+slurm.sbatch.signal=USR2@600",
                "+backend.megatron.exit_signal_handler=true",
            ],
            "slurm.sbatch.signal",
            "would also reach torchrun",
        ),
        (["slurm=lumi", "+slurm.sbatch.array=0-1001"], "slurm.sbatch.array", "MaxArraySize (1001)"),
    ],
)
def test_launch_and_limit_mistakes_are_compile_errors(
    overrides: list[str], key: str, words: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_file(experiment(tmp_path, "megatron"), overrides, ENV)
    assert [p.key for p in caught.value.problems] == [key]
    assert words in rendered(caught.value)


def test_torchrun_with_sigterm_is_allowed(tmp_path: Path) -> None:
    overrides = [
        "slurm=leonardo",
        "+slurm.sbatch.signal=TERM@600",
        "+backend.megatron.exit_signal_handler=true",
    ]
    script = script_of(experiment(tmp_path, "megatron"), overrides)
    assert "\n#SBATCH --signal=TERM@600\n" in script


@pytest.mark.parametrize(
    ("spec", "highest"),
    [("0-31", 31), ("7", 7), ("1,3,5", 5), ("1-7:2", 7), ("0-1000%4", 1000), ("a-b", None)],
)
def test_max_array_index(spec: str, highest: int | None) -> None:
    assert max_array_index(spec) == highest


# --- Whole-bundle limits (called by the pipeline with every job's lock entry) -------------


def limits_base(**limits: Any) -> dict[str, Any]:
    return {"slurm": {"limits": limits}}


def lock_job(name: str, chain_repeat: int = 1) -> LockJob:
    return LockJob(
        name=name,
        script=f"jobs/{name}.sbatch",
        sha256="0" * 64,
        output_dir=f"out/{name}",
        log_path=f"out/{name}.log",
        chain_repeat=chain_repeat,
    )


def test_job_count_over_the_submit_limit_is_an_error() -> None:
    jobs = [lock_job(f"j{i}") for i in range(3)]
    check_bundle_limits(limits_base(max_jobs=3), {}, {}, jobs)
    with pytest.raises(ConfigError) as caught:
        check_bundle_limits(limits_base(max_jobs=2), {}, {}, jobs)
    assert "holds 3 jobs" in rendered(caught.value)
    assert caught.value.problems[0].key == "slurm.limits.max_jobs"


def test_each_chain_link_counts_against_the_submit_limit() -> None:
    jobs = [
        lock_job("chained", chain_repeat=4),
        lock_job("single"),
    ]
    check_bundle_limits(limits_base(max_jobs=5), {}, {}, jobs)
    with pytest.raises(ConfigError) as caught:
        check_bundle_limits(limits_base(max_jobs=4), {}, {}, jobs)
    assert "holds 2 jobs (5 SLURM jobs with their chain links)" in rendered(caught.value)


def test_limits_are_interpolated() -> None:
    base = {"vars": {"n": 1}, **limits_base(max_jobs="${vars.n}")}
    jobs = [lock_job("a")] * 2
    with pytest.raises(ConfigError):
        check_bundle_limits(base, {}, {}, jobs)


def test_no_limits_no_check() -> None:
    check_bundle_limits({"slurm": {}}, {}, {}, [lock_job("a")] * 100)


def test_lumi_binding_masks_match_the_task_count() -> None:
    text = (SLURM / "lumi.yaml").read_text(encoding="utf-8")
    (masks,) = re.findall(r"mask_cpu:(\S+)", text)
    values = [int(mask, 16) for mask in masks.split(",")]
    assert len(values) == 8
    assert all(bin(v).count("1") == 7 for v in values)  # cpus_per_task: 7
    union = 0
    for value in values:
        assert union & value == 0
        union |= value
    # The first core of every CCD stays free (LUMI reserves it).
    assert all(not union & (1 << (8 * ccd)) for ccd in range(8))
