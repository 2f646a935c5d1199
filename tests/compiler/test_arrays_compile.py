"""`slurm.array: true` at compile time: which jobs share an array, what the lockfile says about
each array and its members, and that the shared script really runs the right member (and only
the script that was compiled)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oellm.cli import main
from oellm.compiler import array_groups
from oellm.compiler.errors import ConfigError
from oellm.compiler.pipeline import CompiledBundle
from oellm.compiler.write import write_bundle
from oellm.lockfile.model import LockJob
from oellm.lockfile.schema import validator as lock_validator
from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.errors import ReconcileError
from tests.compiler.hostile import bash_syntax_errors
from tests.helpers import compile_error, compile_file, rendered, write

SWEEP3 = """
project: {name: arr}
stage: train
job: {name: "t_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "echo task ${vars.i}"}}
slurm: {array: true, array_throttle: 2, sbatch: {time: 1}}
sweep:
  params: {vars.i: [0, 1, 2]}
"""

# A fixed output folder, so that snapshots do not depend on the machine.
FIXED_ENV = {"OUTPUT_DIR": "/scratch/arr"}

# srun as a stub: skip its options, run the step in place.
SRUN_STUB = """#!/bin/bash
while [ "$#" -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"""


def compile_text(
    tmp_path: Path, text: str, env: dict[str, str] | None = None, name: str = "exp.yaml"
) -> CompiledBundle:
    return compile_file(write(tmp_path / name, text), env=FIXED_ENV if env is None else env)


def members_of(bundle: CompiledBundle) -> list[tuple[str, str | None, int | None]]:
    """(job, array group, index) in job order."""
    return [
        (j["name"], j.get("array_group"), j.get("array_index")) for j in bundle.lock_json["jobs"]
    ]


def case_lines(script: bytes) -> list[tuple[int, str, str]]:
    """The dispatcher's (index, member script, sha256) rows."""
    rows = re.findall(
        r"^  (\d+)\) oellm_script=(\S+) oellm_sha256=([0-9a-f]{64}) ;;$",
        script.decode(),
        flags=re.MULTILINE,
    )
    return [(int(i), path, sha) for i, path, sha in rows]


def directive(script: bytes, option: str) -> list[str]:
    return re.findall(rf"^#SBATCH {re.escape(option)}=(.*)$", script.decode(), flags=re.MULTILINE)


def install_srun(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    srun = folder / "srun"
    srun.write_text(SRUN_STUB)
    srun.chmod(0o755)
    return folder


def run_array(
    bundle_dir: Path, group_script: str, task: str, where: Path
) -> subprocess.CompletedProcess[str]:
    """Run the shared script as SLURM would run task `task` of array job 77."""
    fakes = install_srun(where / "fakes")
    cwd = where / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{fakes}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(where),
        "LANG": "C.UTF-8",
        "SLURM_ARRAY_TASK_ID": task,
        "SLURM_ARRAY_JOB_ID": "77",
        "SLURM_JOB_ID": "78",  # the task's own job id: markers must not use it
        "SLURM_SUBMIT_DIR": str(bundle_dir),
    }
    return subprocess.run(
        ["bash", str(bundle_dir / group_script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --- 1. One array of three jobs -----------------------------------------------------------


def test_three_job_sweep_is_one_array(tmp_path: Path) -> None:
    bundle = compile_text(tmp_path, SWEEP3)
    lock = bundle.lock_json
    assert set(lock["arrays"]) == {"train"}
    group = lock["arrays"]["train"]
    script = bundle.files["jobs/arrays/train.sbatch"]
    assert group == {
        "script": "jobs/arrays/train.sbatch",
        "sha256": hashlib.sha256(script).hexdigest(),
        "stage": "train",
        "size": 3,
        "throttle": 2,
    }
    assert members_of(bundle) == [("t_0", "train", 0), ("t_1", "train", 1), ("t_2", "train", 2)]
    for job in lock["jobs"]:
        assert job["array"] is True
        assert job["log_path"] == "/scratch/arr/arrays/train/slurm-%A_%a.log"
        # Each member keeps its own script, hashed as written.
        assert job["script"] == f"jobs/{job['name']}.sbatch"
        assert job["sha256"] == hashlib.sha256(bundle.files[job["script"]]).hexdigest()
    # The dispatcher lists every member at its index with its script's hash.
    assert case_lines(script) == [
        (j["array_index"], j["script"], j["sha256"]) for j in lock["jobs"]
    ]
    # One --output for the array, the member's own --output is the same pattern.
    assert directive(script, "--output") == ["/scratch/arr/arrays/train/slurm-%A_%a.log"]
    assert directive(script, "--job-name") == ["train"]
    assert directive(bundle.files["jobs/t_1.sbatch"], "--output") == [
        "/scratch/arr/arrays/train/slurm-%A_%a.log"
    ]
    # The bundle has exactly these scripts.
    assert sorted(n for n in bundle.files if n.endswith(".sbatch")) == [
        "jobs/arrays/train.sbatch",
        "jobs/t_0.sbatch",
        "jobs/t_1.sbatch",
        "jobs/t_2.sbatch",
    ]


def test_array_lock_passes_the_schema_and_loads(tmp_path: Path) -> None:
    bundle = compile_text(tmp_path, SWEEP3)
    errors = list(lock_validator().iter_errors(bundle.lock_json))
    assert errors == []
    write_bundle(bundle, tmp_path / "bundle")
    on_disk = json.loads((tmp_path / "bundle" / "plan.lock.json").read_text())
    assert on_disk == bundle.lock_json
    written = (tmp_path / "bundle" / "jobs" / "arrays" / "train.sbatch").read_bytes()
    assert hashlib.sha256(written).hexdigest() == on_disk["arrays"]["train"]["sha256"]
    loaded = load_bundle(tmp_path / "bundle")  # checks every script's sha256 too
    assert set(loaded.arrays) == {"train"}
    group = loaded.arrays["train"]
    assert (group.script, group.size, group.throttle) == ("jobs/arrays/train.sbatch", 3, 2)
    assert [(j.name, j.array_group, j.array_index) for j in loaded.jobs] == [
        ("t_0", "train", 0),
        ("t_1", "train", 1),
        ("t_2", "train", 2),
    ]
    assert loaded.array_of(loaded.job("t_2")) == group


def test_load_bundle_refuses_an_edited_group_script(tmp_path: Path) -> None:
    bundle = compile_text(tmp_path, SWEEP3)
    write_bundle(bundle, tmp_path / "bundle")
    script = tmp_path / "bundle" / "jobs" / "arrays" / "train.sbatch"
    script.write_bytes(script.read_bytes() + b"echo edited\n")
    with pytest.raises(ReconcileError) as caught:
        load_bundle(tmp_path / "bundle")
    assert "changed after compile" in caught.value.message
    assert caught.value.path == str(script)


def test_group_script_snapshot(tmp_path: Path, text_snapshot: Any) -> None:
    bundle = compile_text(tmp_path, SWEEP3)
    assert bundle.files["jobs/arrays/train.sbatch"].decode() == text_snapshot


def test_member_script_snapshot(tmp_path: Path, text_snapshot: Any) -> None:
    bundle = compile_text(tmp_path, SWEEP3)
    assert bundle.files["jobs/t_1.sbatch"].decode() == text_snapshot


def test_member_markers_are_named_by_the_array_task_only_for_members(tmp_path: Path) -> None:
    member = compile_text(tmp_path, SWEEP3).files["jobs/t_1.sbatch"].decode()
    alone = compile_text(
        tmp_path, SWEEP3.replace("array: true", "array: false"), name="alone.yaml"
    ).files["jobs/t_1.sbatch"]
    assert 'oellm_attempt="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in member
    assert "SLURM_ARRAY_JOB_ID" not in alone.decode()


# --- 2. The shared script dispatches ------------------------------------------------------


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """SWEEP3 compiled with outputs under tmp_path and written to tmp_path/bundle."""
    bundle = compile_text(tmp_path, SWEEP3, env={"OUTPUT_DIR": str(tmp_path / "out")})
    write_bundle(bundle, tmp_path / "bundle")
    return tmp_path / "bundle", bundle.lock_json


def test_group_script_runs_the_task_of_its_index(
    written: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    bundle_dir, lock = written
    assert not bash_syntax_errors(bundle_dir / "jobs/arrays/train.sbatch")
    done = run_array(bundle_dir, "jobs/arrays/train.sbatch", "1", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "task 1\n"
    markers = Path(lock["jobs"][1]["output_dir"]) / ".oellm"
    assert markers == tmp_path / "out" / "t_1" / ".oellm"
    assert sorted(p.name for p in markers.iterdir()) == ["77_1.exit", "77_1.started"]
    assert (markers / "77_1.exit").read_text() == "0\n"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", (markers / "77_1.started").read_text()
    )
    # No other member ran.
    for other in (lock["jobs"][0], lock["jobs"][2]):
        assert not (Path(other["output_dir"]) / ".oellm").exists()


def test_group_script_passes_the_member_exit_status(tmp_path: Path) -> None:
    text = SWEEP3.replace('"echo task ${vars.i}"', '"exit $((${vars.i} + 3))"')
    bundle = compile_text(tmp_path, text, env={"OUTPUT_DIR": str(tmp_path / "out")})
    write_bundle(bundle, tmp_path / "bundle")
    done = run_array(tmp_path / "bundle", "jobs/arrays/train.sbatch", "2", tmp_path / "run")
    assert done.returncode == 5, done.stderr
    assert (tmp_path / "out" / "t_2" / ".oellm" / "77_2.exit").read_text() == "5\n"


@pytest.mark.parametrize("task", ["3", "-1", "", "1 ", "01"])
def test_group_script_refuses_an_unknown_index(
    written: tuple[Path, dict[str, Any]], tmp_path: Path, task: str
) -> None:
    bundle_dir, _ = written
    done = run_array(bundle_dir, "jobs/arrays/train.sbatch", task, tmp_path / "run")
    assert done.returncode == 2
    assert done.stdout == ""
    shown = task or "(none)"
    assert done.stderr == f"oellm: array train has no task {shown}\n"
    assert not (tmp_path / "out").exists()


def test_group_script_refuses_a_member_edited_after_compile(
    written: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    bundle_dir, _ = written
    member = bundle_dir / "jobs" / "t_1.sbatch"
    text = member.read_text()
    assert "oellm_command='echo task 1'" in text
    member.write_text(text.replace("echo task 1", "echo edited"))
    done = run_array(bundle_dir, "jobs/arrays/train.sbatch", "1", tmp_path / "run")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "is not the script this array was submitted with" in done.stderr
    assert str(member) in done.stderr
    assert not (tmp_path / "out").exists()
    # The other members are untouched and still run.
    done = run_array(bundle_dir, "jobs/arrays/train.sbatch", "2", tmp_path / "run")
    assert (done.returncode, done.stdout) == (0, "task 2\n"), done.stderr


def test_group_script_refuses_a_missing_member(
    written: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    bundle_dir, _ = written
    (bundle_dir / "jobs" / "t_0.sbatch").unlink()
    done = run_array(bundle_dir, "jobs/arrays/train.sbatch", "0", tmp_path / "run")
    assert done.returncode == 2
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()


# --- 3. Grouping --------------------------------------------------------------------------


def test_different_resources_in_one_stage_are_numbered_arrays(tmp_path: Path) -> None:
    bundle = compile_text(
        tmp_path,
        """
        project: {name: arr}
        stage: train
        job: {name: "t_${vars.i}_${slurm.sbatch.time}"}
        vars: {i: 0}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {array: true, sbatch: {time: 1}}
        sweep:
          params: {vars.i: [0, 1], slurm.sbatch.time: [1, 2]}
        """,
    )
    lock = bundle.lock_json
    assert set(lock["arrays"]) == {"train-1", "train-2"}
    jobs = lock["jobs"]
    # train-1 is the array of the first job; each array holds the jobs of one time limit.
    assert jobs[0]["array_group"] == "train-1"
    for name, group in lock["arrays"].items():
        members = [j for j in jobs if j["array_group"] == name]
        times = {j["params"]["slurm.sbatch.time"] for j in members}
        assert len(times) == 1
        assert [j["array_index"] for j in members] == [0, 1]
        assert group["size"] == 2 and group["stage"] == "train" and group["throttle"] is None
        assert group["script"] == f"jobs/arrays/{name}.sbatch"
        script = bundle.files[group["script"]]
        assert group["sha256"] == hashlib.sha256(script).hexdigest()
        assert directive(script, "--time") == [str(times.pop())]
        assert directive(script, "--job-name") == [name]
        assert case_lines(script) == [(j["array_index"], j["script"], j["sha256"]) for j in members]
        # Both arrays of the stage write into the stage's one log folder.
        assert {j["log_path"] for j in members} == {"/scratch/arr/arrays/train/slurm-%A_%a.log"}


def test_the_plan_shows_how_a_stage_is_submitted(tmp_path: Path) -> None:
    bundle = compile_text(
        tmp_path,
        """
        project: {name: arr}
        stage: train
        job: {name: "t_${vars.i}_${slurm.sbatch.time}"}
        vars: {i: 0}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {array: true, array_throttle: 3, sbatch: {time: 1}}
        sweep:
          params: {vars.i: [0, 1], slurm.sbatch.time: [1, 2]}
        """,
    )
    plan = bundle.files["plan.txt"].decode()
    assert "│ Submitted as 2 arrays:" in plan
    assert "│   • train-1 (2 tasks, at most 3 at once)" in plan
    assert "│   • train-2 (2 tasks, at most 3 at once)" in plan


TWO_STAGES = """
project: {name: arr}
job: {name: "${stage}_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "echo ${stage} ${vars.i}"}}
slurm: {array: true, sbatch: {time: 1}}
sweep:
  type: list
  groups:
    - params: {vars.i: [0, 1]}
      defaults: {stage: prep}
    - params: {vars.i: [0, 1, 2]}
      defaults: {stage: train}
"""


def test_one_array_per_stage(tmp_path: Path) -> None:
    bundle = compile_text(tmp_path, TWO_STAGES)
    lock = bundle.lock_json
    assert {name: (a["stage"], a["size"]) for name, a in lock["arrays"].items()} == {
        "prep": ("prep", 2),
        "train": ("train", 3),
    }
    assert members_of(bundle) == [
        ("prep_0", "prep", 0),
        ("prep_1", "prep", 1),
        ("train_0", "train", 0),
        ("train_1", "train", 1),
        ("train_2", "train", 2),
    ]
    for job in lock["jobs"]:
        assert job["log_path"] == f"/scratch/arr/arrays/{job['stage']}/slurm-%A_%a.log"
    prep = bundle.files["jobs/arrays/prep.sbatch"]
    assert [path for _, path, _ in case_lines(prep)] == ["jobs/prep_0.sbatch", "jobs/prep_1.sbatch"]


def test_jobs_without_a_stage_form_the_array_jobs(tmp_path: Path) -> None:
    bundle = compile_text(tmp_path, SWEEP3.replace("stage: train\n", ""))
    assert set(bundle.lock_json["arrays"]) == {"jobs"}
    assert bundle.lock_json["arrays"]["jobs"]["stage"] is None
    assert bundle.lock_json["arrays"]["jobs"]["script"] == "jobs/arrays/jobs.sbatch"
    assert {j["log_path"] for j in bundle.lock_json["jobs"]} == {
        "/scratch/arr/arrays/jobs/slurm-%A_%a.log"
    }
    assert "(stage" not in bundle.files["jobs/arrays/jobs.sbatch"].decode().splitlines()[1]


def test_without_array_no_array_fields(tmp_path: Path) -> None:
    bundle = compile_text(tmp_path, SWEEP3.replace("array: true", "array: false"))
    assert "arrays" not in bundle.lock_json
    assert not any(name.startswith("jobs/arrays/") for name in bundle.files)
    for job in bundle.lock_json["jobs"]:
        assert job["array"] is False
        assert "array_group" not in job and "array_index" not in job
        assert "/arrays/" not in job["log_path"]
    # Not set at all: the preset's default (false).
    plain = compile_text(
        tmp_path, SWEEP3.replace("array: true, array_throttle: 2, ", ""), name="plain.yaml"
    )
    assert "arrays" not in plain.lock_json
    assert not any("array_group" in job for job in plain.lock_json["jobs"])


def test_array_only_for_the_jobs_that_ask(tmp_path: Path) -> None:
    bundle = compile_text(
        tmp_path,
        """
        project: {name: arr}
        stage: train
        job: {name: "t_${vars.i}_${slurm.array}"}
        vars: {i: 0}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {sbatch: {time: 1}}
        sweep:
          params: {vars.i: [0, 1], slurm.array: [true, false]}
        """,
    )
    lock = bundle.lock_json
    assert lock["arrays"]["train"]["size"] == 2
    for job in lock["jobs"]:
        if job["array"]:
            assert job["array_group"] == "train"
        else:
            assert "array_group" not in job and "/arrays/" not in job["log_path"]
    assert sorted(j["array_index"] for j in lock["jobs"] if j["array"]) == [0, 1]


def test_max_array_size_splits_a_group(tmp_path: Path) -> None:
    bundle = compile_text(
        tmp_path,
        """
        project: {name: arr}
        stage: train
        job: {name: "t_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {array: true, sbatch: {time: 1}, limits: {max_array_size: 2}}
        sweep:
          params: {vars.i: [0, 1, 2, 3, 4]}
        """,
    )
    lock = bundle.lock_json
    assert {name: a["size"] for name, a in lock["arrays"].items()} == {
        "train-1": 2,
        "train-2": 2,
        "train-3": 1,
    }
    assert members_of(bundle) == [
        ("t_0", "train-1", 0),
        ("t_1", "train-1", 1),
        ("t_2", "train-2", 0),
        ("t_3", "train-2", 1),
        ("t_4", "train-3", 0),
    ]
    for name, group in lock["arrays"].items():
        script = bundle.files[group["script"]]
        members = [j for j in lock["jobs"] if j["array_group"] == name]
        assert case_lines(script) == [(j["array_index"], j["script"], j["sha256"]) for j in members]
        # Every index stays below MaxArraySize.
        assert all(index < 2 for index, _, _ in case_lines(script))
    assert not list(lock_validator().iter_errors(lock))


def test_array_group_names_are_unique_across_stages(tmp_path: Path) -> None:
    """Stage `x` with two arrays names them `x-1` and `x-2`; a stage literally called `x-1`
    must not take over the first of them."""
    bundle = compile_text(
        tmp_path,
        """
        project: {name: arr}
        job: {name: "t_${stage}_${vars.i}_${slurm.sbatch.time}"}
        vars: {i: 0}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {array: true, sbatch: {time: 1}}
        sweep:
          type: list
          groups:
            - params: {vars.i: [1, 2], slurm.sbatch.time: [1, 2]}
              defaults: {stage: x}
            - params: {vars.i: [1]}
              defaults: {stage: x-1}
        """,
    )
    _check_groups_consistent(bundle)
    assert sorted(bundle.lock_json["arrays"]) == ["x-1", "x-1.2", "x-2"]


def test_array_group_names_are_unique_with_and_without_stage(tmp_path: Path) -> None:
    """Jobs without a stage form the array `jobs`; a stage called `jobs` must not merge
    into it."""
    bundle = compile_text(
        tmp_path,
        """
        project: {name: arr}
        job: {name: "t_${vars.s}_${vars.i}"}
        vars: {i: 0, s: none}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {array: true, sbatch: {time: 1}}
        sweep:
          type: list
          groups:
            - params: {vars.i: [1, 2]}
            - params: {vars.i: [1]}
              defaults: {stage: jobs, vars.s: jobs}
        """,
    )
    _check_groups_consistent(bundle)
    assert sorted(bundle.lock_json["arrays"]) == ["jobs", "jobs.2"]


def _check_groups_consistent(bundle: CompiledBundle) -> None:
    """Every member is listed by its group's script at its index, with its own script; every
    group's size is its member count."""
    lock = bundle.lock_json
    sizes = {name: a["size"] for name, a in lock["arrays"].items()}
    counted: dict[str, int] = {}
    for job in lock["jobs"]:
        counted[job["array_group"]] = counted.get(job["array_group"], 0) + 1
    assert sizes == counted
    for name, group in lock["arrays"].items():
        members = [j for j in lock["jobs"] if j["array_group"] == name]
        assert {j["stage"] for j in members} == {group["stage"]}
        script = bundle.files[group["script"]]
        assert case_lines(script) == [(j["array_index"], j["script"], j["sha256"]) for j in members]


# --- 4. What an array cannot be -----------------------------------------------------------

REFUSED = {
    "log_event_path_with_job_id": (
        """
        project: {name: arr}
        backend: {bash: {command: "true"}}
        slurm: {array: true}
        job:
          name: c
          log_events:
            - name: nccl
              kind: substring
              pattern: NCCL WARN
              paths: [ok-%A_%a.err, "err-%j.log"]
              actions: [{kind: restart}]
        """,
        "job.log_events.0.paths",
        (10, 29),
        "slurm.array: %j in a log event path is the task's own job id",
    ),
    "chain_repeat": (
        """
        project: {name: arr}
        backend: {bash: {command: "true"}}
        slurm: {array: true}
        job:
          name: c
          chain_repeat: 2
        """,
        "job.chain_repeat",
        (6, 3),
        "slurm.array and job.chain_repeat cannot be combined",
    ),
    "dependency_slurm": (
        """
        project: {name: arr}
        backend: {bash: {command: "true"}}
        slurm: {array: true}
        job:
          name: c
          dependency: slurm
        """,
        "job.dependency",
        (6, 3),
        "slurm.array and job.dependency: slurm cannot be combined",
    ),
    "sbatch_array": (
        """
        project: {name: arr}
        backend: {bash: {command: "true"}}
        job: {name: c}
        slurm:
          array: true
          sbatch:
            array: 0-3
        """,
        "slurm.sbatch.array",
        (7, 5),
        "slurm.array builds the --array option itself",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_array_refuses(case: str, tmp_path: Path) -> None:
    text, key, (line, col), message = REFUSED[case]
    exp = write(tmp_path / "exp.yaml", text)
    error = compile_error(exp, env=FIXED_ENV)
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.key == key
    assert message in problem.message
    assert problem.hint
    assert problem.origin is not None
    assert (problem.origin.file, problem.origin.line, problem.origin.col) == (str(exp), line, col)
    assert rendered(error).startswith(f"{exp}:{line}:{col}: {key}: {message}")


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_array_refusal_on_the_command_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, key, (line, col), message = REFUSED[case]
    exp = write(tmp_path / "exp.yaml", text)
    code, out, err = cli(["compile", str(exp), "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"{exp}:{line}:{col}: {key}: {message}")
    assert "\n  hint: " in err
    assert "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_array_refusal_names_the_override(tmp_path: Path) -> None:
    exp = write(
        tmp_path / "exp.yaml",
        """
        project: {name: arr}
        backend: {bash: {command: "true"}}
        job: {name: c}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        compile_file(exp, overrides=["slurm.array=true", "job.chain_repeat=3"], env=FIXED_ENV)
    problem = caught.value.problems[0]
    assert problem.key == "job.chain_repeat"
    assert problem.origin is not None and problem.origin.file == "<command line>"


def test_array_refuses_a_log_path_of_the_users(tmp_path: Path) -> None:
    exp = write(
        tmp_path / "exp.yaml",
        """
        project: {name: arr}
        backend: {bash: {command: "true"}}
        slurm: {array: true}
        job:
          name: c
          log_path: /logs/c-%j.log
        """,
    )
    error = compile_error(exp, env=FIXED_ENV)
    problem = error.problems[0]
    assert problem.key == "job.log_path"
    assert problem.origin is not None and (problem.origin.line, problem.origin.col) == (6, 3)
    # Without slurm.array the same log_path is the job's own.
    bundle = compile_file(
        write(tmp_path / "plain.yaml", exp.read_text().replace("array: true", "array: false")),
        env=FIXED_ENV,
    )
    assert bundle.lock_json["jobs"][0]["log_path"] == "/logs/c-%j.log"


def test_chain_repeat_of_one_is_fine(tmp_path: Path) -> None:
    bundle = compile_text(
        tmp_path,
        SWEEP3.replace('job: {name: "t_${vars.i}"}', 'job: {name: "t_${vars.i}", chain_repeat: 1}'),
    )
    assert bundle.lock_json["arrays"]["train"]["size"] == 3


# --- 5. Hostile names ---------------------------------------------------------------------


def test_stage_with_shell_characters_is_refused(tmp_path: Path) -> None:
    exp = write(
        tmp_path / "exp.yaml",
        """
        project: {name: arr}
        stage: "a b;$(x)"
        job: {name: c}
        backend: {bash: {command: "true"}}
        slurm: {array: true}
        """,
    )
    error = compile_error(exp, env=FIXED_ENV)
    assert [p.key for p in error.problems] == ["stage"]
    assert rendered(error).startswith(f"{exp}:2:1: stage: ")


def test_odd_but_allowed_names_compile_and_run(tmp_path: Path) -> None:
    """The stage uses every punctuation character a stage may hold; the project name and the
    output folder hold shell syntax."""
    out = tmp_path / "o u t'$(touch pwned)`touch pwned`;x"
    env = {"OUTPUT_DIR": str(out), "HOSTILE_NAME": "p'\n$(touch pwned)`id`;x\\"}
    bundle = compile_text(
        tmp_path,
        """
        project: {name: "${oc.env:HOSTILE_NAME}"}
        stage: "v1.0+rc-2_x"
        job: {name: "t_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "echo task ${vars.i}"}}
        slurm: {array: true, sbatch: {time: 1}}
        sweep:
          params: {vars.i: [0, 1]}
        """,
        env=env,
    )
    assert set(bundle.lock_json["arrays"]) == {"v1.0+rc-2_x"}
    path = bundle.lock_json["arrays"]["v1.0+rc-2_x"]["script"]
    assert path == "jobs/arrays/v1.0+rc-2_x.sbatch"
    write_bundle(bundle, tmp_path / "bun dle")
    bundle_dir = tmp_path / "bun dle"
    assert not bash_syntax_errors(bundle_dir / path)
    load_bundle(bundle_dir)
    # The project name is only in a comment, and a line break in it cannot end the comment.
    header = (bundle_dir / path).read_text().splitlines()[1]
    assert header.startswith("# oellm array v1.0+rc-2_x (stage v1.0+rc-2_x) of project p'?$(")
    done = run_array(bundle_dir, path, "1", tmp_path / "run")
    assert (done.returncode, done.stdout) == (0, "task 1\n"), done.stderr
    markers = out / "t_1" / ".oellm"
    assert sorted(p.name for p in markers.iterdir()) == ["77_1.exit", "77_1.started"]
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize(
    "stage",
    ["a b;$(touch pwned)", "../../etc", "x/y", "`id`", "a\nb", "ä€", "'", "-rf", ""],
)
def test_group_names_from_any_stage_are_safe(stage: str, tmp_path: Path) -> None:
    """The schema keeps such stages out; the group still never trusts one."""
    directives = (("--output", "/o/arrays/x/slurm-%A_%a.log"), ("--time", "1"))
    one = array_groups.Member("a", stage or None, directives, None, None, "p", "out/.oellm/p")
    two = array_groups.Member(
        "b", stage or None, directives, 3, None, "p", "out/.oellm/p"
    )  # throttle
    entries = {
        name: LockJob(
            name=name,
            script=f"jobs/{name}.sbatch",
            sha256="0" * 64,
            output_dir="o",
            log_path="o/x.log",
        )
        for name in ("a", "b")
    }
    grouped = array_groups.group([one, two], entries, {})
    assert len(grouped.arrays) == 2
    for name, group in grouped.arrays.items():
        assert re.fullmatch(r"[A-Za-z0-9_.+-]+", name)
        assert name not in (".", "..")
        assert group.name == name and group.script == f"jobs/arrays/{name}.sbatch"
        assert re.fullmatch(r"jobs/arrays/[A-Za-z0-9_.+-]+\.sbatch", group.script)
        script = tmp_path / f"{len(list(tmp_path.iterdir()))}.sbatch"
        script.write_bytes(grouped.scripts[group.script])
        assert not bash_syntax_errors(script)
    assert [grouped.members[n].array_group for n in entries] == list(grouped.arrays)
    log = array_groups.member_log_path({"stage": stage, "project": {"output_dir": "/o"}})
    folder = log.removeprefix("/o/arrays/").removesuffix("/slurm-%A_%a.log")
    assert re.fullmatch(r"[A-Za-z0-9_.+-]+", folder) and folder not in (".", "..")


# --- 6. Determinism -----------------------------------------------------------------------

MIXED = """
project: {name: arr}
job: {name: "${stage}_${vars.i}_${slurm.sbatch.time}"}
vars: {i: 0}
backend: {bash: {command: "echo ${stage} ${vars.i}"}}
slurm: {array: true, array_throttle: 2, sbatch: {time: 1}, limits: {max_array_size: 2}}
sweep:
  type: list
  groups:
    - params: {vars.i: [0, 1, 2], slurm.sbatch.time: [1, 2]}
      defaults: {stage: prep}
    - params: {vars.i: [0, 1, 2]}
      defaults: {stage: train}
"""


def test_compiling_twice_is_byte_identical(tmp_path: Path) -> None:
    first = compile_text(tmp_path, MIXED)
    second = compile_text(tmp_path, MIXED)
    assert first.files == second.files
    # prep: 2 time limits x (2 + 1 tasks); train: 2 + 1 tasks.
    assert {name: a["size"] for name, a in first.lock_json["arrays"].items()} == {
        "prep-1": 2,
        "prep-2": 1,
        "prep-3": 2,
        "prep-4": 1,
        "train-1": 2,
        "train-2": 1,
    }
    write_bundle(first, tmp_path / "a")
    write_bundle(second, tmp_path / "b")
    files_a = {
        p.relative_to(tmp_path / "a"): p.read_bytes()
        for p in (tmp_path / "a").rglob("*")
        if p.is_file()
    }
    files_b = {
        p.relative_to(tmp_path / "b"): p.read_bytes()
        for p in (tmp_path / "b").rglob("*")
        if p.is_file()
    }
    assert files_a == files_b
    assert {p.as_posix() for p in files_a} == set(first.files)


def test_compiling_in_separate_processes_is_byte_identical(tmp_path: Path) -> None:
    """Another hash seed must not reorder arrays or their members."""
    exp = write(tmp_path / "exp.yaml", MIXED)
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        done = subprocess.run(
            [sys.executable, "-m", "oellm", "compile", str(exp), "-o", str(out)],
            env={**os.environ, "PYTHONHASHSEED": seed, **FIXED_ENV},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]


def test_a_member_removed_after_submission_runs_from_the_kept_copy(
    written: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A recompile that drops a job whose task is still queued: the task runs the copy of its
    script the reconciler kept (by sha256) when it submitted it, and nothing else."""
    bundle_dir, lock = written
    member = bundle_dir / "jobs" / "t_1.sbatch"
    (entry,) = [j for j in lock["jobs"] if j["name"] == "t_1"]
    kept = Path(lock["project"]["state_dir"]) / "scripts" / f"{entry['sha256']}.sbatch"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(member.read_bytes())
    member.unlink()
    done = run_array(bundle_dir, "jobs/arrays/train.sbatch", "1", tmp_path / "run")
    assert (done.returncode, done.stdout) == (0, "task 1\n"), done.stderr
    # Without a kept copy it refuses, as for any script it cannot check.
    kept.unlink()
    done = run_array(bundle_dir, "jobs/arrays/train.sbatch", "1", tmp_path / "run2")
    assert done.returncode == 2 and "cannot read" in done.stderr
