"""Every cluster preset's script, judged by the real local SLURM (tests/slurm/cluster.sh).

Only the account (the local cluster's `root`) and the partition (`debug`) are overridden, then
`sbatch --test-only` reads the script as the site's sbatch would. The local node is one VM with
16 CPUs, 4 GB and 8 GPUs that the controller counts like real ones (fake device files, see
cluster.sh), so every preset's GPU request is judged as asked; its other node shape (several
nodes, 72 cores per task, 480 GB) cannot be granted here. Two facts make the check meaningful
all the same:

* sbatch parses every `#SBATCH` line itself before it asks the controller; an unknown option or
  a malformed value is refused at that point, whatever else the script asks for
  (`test_parse_errors_come_before_the_node_shape` proves the order). So a preset rejected only
  with the controller's node-shape error has had every directive parsed.
* The controller's own checks (partition, time, QoS, --exclusive, --signal, the task layout,
  the GPUs per node) then run on the same script with the node shape scaled to this VM: memory
  dropped, one node, 2 CPUs per task. Those overrides are listed per preset below, so the test
  says exactly what SLURM did not see.

Two more tests run the per-GPU and per-node launches for real: srun starts the tasks, and a
fake training program reports the ranks and the rendezvous each task saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import CLUSTERS, EXAMPLES, PRESETS, compile_file, write

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# `++` adds the key where a preset has none (the local preset names no account).
LOCAL = ["++slurm.sbatch.account=root", "slurm.sbatch.partition=debug"]
ENV = {
    "SLURM_ACCOUNT": "project_0000",
    "SLURM_QOS": "acc_ehpc",
    "CONTAINER_CACHE_DIR": "/containers",
}
# What the controller answers when a request does not fit the one node (more nodes, CPUs,
# memory, threads, or GPUs than its 8).
NODE_SHAPE_ERROR = "Requested node configuration is not available"
# The node shape of each preset, scaled to the VM: (what the preset asks, the override).
SCALED: dict[str, list[str]] = {
    "local": [],
    "lumi": [
        "slurm.sbatch.nodes=1",
        "slurm.sbatch.cpus_per_task=2",  # 8 tasks x 7 cores
        "slurm.sbatch.mem=null",  # 480G
    ],
    "leonardo": [
        "slurm.sbatch.nodes=1",
        "slurm.sbatch.cpus_per_task=2",  # 32 cores
    ],
    "juwels": [
        "slurm.sbatch.nodes=1",
        "slurm.sbatch.cpus_per_task=2",  # 4 tasks x 12 cores
    ],
    "jupiter": [
        "slurm.sbatch.nodes=1",
        "slurm.sbatch.cpus_per_task=2",  # 4 tasks x 72 cores
    ],
    "marenostrum5": [
        "slurm.sbatch.nodes=1",
        "slurm.sbatch.cpus_per_task=2",  # 160 hardware threads
        "slurm.sbatch.threads_per_core=null",  # 2 per core; the VM has 1
    ],
    "snellius": [
        "slurm.sbatch.nodes=1",
        "slurm.sbatch.cpus_per_task=2",  # 64 cores
    ],
}
EXPERIMENT = """
# @package _global_
defaults:
  - /backend: megatron
project: {name: preset}
backend:
  megatron: {num_layers: 2, train_iters: 10}
"""


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def preset_script(
    tmp_path: Path, preset: str, overrides: list[str], experiment: str = EXPERIMENT
) -> Path:
    container = "apptainer" if preset == "local" else preset
    choice = [f"slurm={preset}", f"container={container}", "container.image=/c/train.sif"]
    path = write(tmp_path / "exp.yaml", experiment)
    bundle = compile_file(path, [*choice, *LOCAL, *overrides], ENV)
    (name,) = [n for n in bundle.files if n.startswith("jobs/") and n.endswith(".sbatch")]
    return write(tmp_path / "job.sbatch", bundle.files[name].decode())


def sbatch_test_only(script: Path) -> tuple[int, str]:
    done = run(["sbatch", "--test-only", str(script)], cwd=script.parent)
    return done.returncode, (done.stdout + done.stderr).strip()


@pytest.mark.parametrize("preset", PRESETS)
def test_every_directive_parses(preset: str, tmp_path: Path) -> None:
    script = preset_script(tmp_path, preset, [])
    code, said = sbatch_test_only(script)
    if code == 0:
        assert "to start at" in said
        return
    # Refused, but only for the node shape: the parser accepted every line before that.
    assert NODE_SHAPE_ERROR in said, said


@pytest.mark.parametrize("preset", PRESETS)
def test_scaled_to_this_node_the_controller_accepts(preset: str, tmp_path: Path) -> None:
    script = preset_script(tmp_path, preset, SCALED[preset])
    code, said = sbatch_test_only(script)
    assert code == 0, said
    assert "to start at" in said and "in partition debug" in said


@pytest.mark.parametrize("preset", CLUSTERS)
def test_cluster_examples_are_accepted_scaled(preset: str, tmp_path: Path) -> None:
    """The cluster examples add their own directives (two nodes, --signal, a time limit)."""
    example = EXAMPLES / "clusters" / f"{preset}.yaml"
    bundle = compile_file(example, [*LOCAL, *SCALED[preset]], ENV)
    for job in bundle.lock_json["jobs"]:
        script = write(tmp_path / job["script"], bundle.files[job["script"]].decode())
        code, said = sbatch_test_only(script)
        assert code == 0, said


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("slurm.sbatch.time=banana", "Invalid --time specification"),
        # The compiler refuses option names sbatch does not document; a site's own option is
        # let through on purpose (slurm.site_options), and then sbatch is the judge.
        (
            "+slurm.sbatch.no_such_option=1 +slurm.site_options.sbatch=[no-such-option]",
            "unrecognized option",
        ),
    ],
)
def test_parse_errors_come_before_the_node_shape(override: str, error: str, tmp_path: Path) -> None:
    """The LUMI script asks for more than this node has: a bad directive is still what sbatch
    reports, so a node-shape refusal means no directive was bad."""
    code, said = sbatch_test_only(preset_script(tmp_path, "lumi", override.split(" ")))
    assert code != 0 and error in said and NODE_SHAPE_ERROR not in said, said


@pytest.mark.parametrize(("preset", "gpus"), [("lumi", "9"), ("leonardo", "gpu:9")])
def test_more_gpus_than_the_node_has_are_refused(preset: str, gpus: str, tmp_path: Path) -> None:
    """The GPU requests are judged, not waved through: one GPU more than the node's 8 is the
    node-shape refusal."""
    key = "gpus_per_node" if preset == "lumi" else "gres"
    script = preset_script(tmp_path, preset, [*SCALED[preset], f"slurm.sbatch.{key}={gpus}"])
    code, said = sbatch_test_only(script)
    assert code != 0 and NODE_SHAPE_ERROR in said, said


def srun_options(script: Path) -> list[str]:
    """The options of the launch line's srun, as the script spells them."""
    lines = script.read_text().splitlines()
    start = lines.index("srun \\") + 1
    options: list[str] = []
    for line in lines[start:]:
        word = line.strip().removesuffix(" \\")
        if not word.startswith("--"):
            break
        options.append(word)
    return options


@pytest.mark.parametrize("preset", PRESETS)
def test_srun_options_parse(preset: str, tmp_path: Path) -> None:
    """srun's options are not #SBATCH lines: `srun --test-only` judges them. The CPU count per
    task is scaled to the VM, as above; a binding this VM cannot apply (no task/affinity plugin)
    is reported but not refused."""
    options = srun_options(preset_script(tmp_path, preset, []))
    assert options or preset == "local"
    scaled = ["--cpus-per-task=2" if o.startswith("--cpus-per-task=") else o for o in options]
    done = run(["srun", "--test-only", "--partition=debug", "--account=root", *scaled, "true"])
    assert done.returncode == 0, done.stderr
    assert "to start at" in done.stderr


# --- The launches, run for real ----------------------------------------------------------

# A stand-in for Megatron's pretrain_gpt.py (and for torchrun): it records, per task, the
# variables torch and Megatron read and the argv it was given.
RECORDER = """import json, os, sys
keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID"]
record = {k: os.environ.get(k) for k in keys}
record["argv"] = sys.argv[1:]
name = os.environ.get("SLURM_PROCID", "x")
with open(os.path.join(os.environ["RECORD_DIR"], f"task-{name}.json"), "w") as out:
    json.dump(record, out)
"""


def submit(script: Path, env: dict[str, str]) -> str:
    done = run(["sbatch", "--parsable", str(script)], cwd=script.parent, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def wait_exit(output_dir: Path, job_id: str) -> str:
    marker = output_dir / ".oellm" / f"{job_id}.exit"
    deadline = time.monotonic() + 60
    while not marker.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} wrote no exit marker within 60 s")
        time.sleep(0.5)
    return marker.read_text().strip()


def records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("task-*.json"))]


def launch_env(tmp_path: Path, fakes: Path | None = None) -> dict[str, str]:
    path = os.environ["PATH"] if fakes is None else f"{fakes}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "RECORD_DIR": str(tmp_path / "records")}


def test_per_gpu_each_task_is_one_rank(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """LUMI's layout with 2 tasks: srun starts one task per 'GPU'; each gets its own RANK and
    LOCAL_RANK, all the same rendezvous, and two jobs get different ports."""
    megatron = tmp_path / "megatron"
    write(megatron / "pretrain_gpt.py", RECORDER)
    (tmp_path / "records").mkdir()
    overrides = [
        *SCALED["lumi"],
        "slurm.gpus_per_node=2",
        "slurm.sbatch.exclusive=false",  # let the two jobs share the VM
        "slurm.srun.cpu_bind=null",  # LUMI's masks name cores 49-63; the VM has 16
        "container=none",
        "backend.launcher=[python3,-u]",
        f"project.output_dir={tmp_path / 'out'}",
    ]
    path = write(tmp_path / "exp.yaml", EXPERIMENT)
    bundle = compile_file(
        path,
        ["slurm=lumi", *LOCAL, *overrides],
        {**ENV, "MEGATRON_LM_DIR": str(megatron)},
    )
    script = write(tmp_path / "job.sbatch", bundle.files["jobs/preset.sbatch"].decode())
    output_dir = tmp_path / "out" / "preset"
    output_dir.mkdir(parents=True)
    env = launch_env(tmp_path)
    first = submit(script, env)
    assert wait_exit(output_dir, first) == "0"
    seen = records(tmp_path / "records")
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"]) for r in seen] == [
        ("0", "0", "2"),
        ("1", "1", "2"),
    ]
    node = slurm_cluster.node
    port = str(10000 + int(first) % 20000)
    assert {(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in seen} == {(node, port)}
    assert seen[0]["argv"] == [
        "--load",
        f"{output_dir}/checkpoints",
        "--num-layers",
        "2",
        "--save",
        f"{output_dir}/checkpoints",
        "--train-iters",
        "10",
    ]
    second = submit(script, env)
    assert wait_exit(output_dir, second) == "0"
    ports = {r["MASTER_PORT"] for r in records(tmp_path / "records")}
    assert ports == {str(10000 + int(second) % 20000)} and second != first
    assert ports != {port}


def test_per_node_runs_torchrun_once_per_node(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """Leonardo's layout: one task per node, which runs torchrun with the node count and the
    rendezvous the script derived (a fake torchrun records what it was given)."""
    fakes = tmp_path / "fakes"
    torchrun = write(fakes / "torchrun", "#!/usr/bin/env python3\n" + RECORDER)
    torchrun.chmod(0o755)
    (tmp_path / "records").mkdir()
    overrides = [*SCALED["leonardo"], "container=none", f"project.output_dir={tmp_path / 'out'}"]
    path = write(tmp_path / "exp.yaml", EXPERIMENT)
    bundle = compile_file(path, ["slurm=leonardo", *LOCAL, *overrides], ENV)
    script = write(tmp_path / "job.sbatch", bundle.files["jobs/preset.sbatch"].decode())
    output_dir = tmp_path / "out" / "preset"
    output_dir.mkdir(parents=True)
    job_id = submit(script, launch_env(tmp_path, fakes))
    assert wait_exit(output_dir, job_id) == "0"
    (seen,) = records(tmp_path / "records")
    node = slurm_cluster.node
    endpoint = f"{node}:{10000 + int(job_id) % 20000}"
    assert seen["argv"][:14] == [
        "--nnodes", "1", "--nproc_per_node", "4", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", endpoint, "--rdzv_id", job_id, "--max_restarts", "0",
        "/opt/Megatron-LM/pretrain_gpt.py", "--load",
    ]  # fmt: skip
