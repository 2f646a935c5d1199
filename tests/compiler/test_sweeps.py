"""The predecessor README's sweep examples, compiled end to end: counts, names and wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES, compile_error, compile_file, rendered, write

SWEEPS = EXAMPLES / "sweeps"


@pytest.mark.parametrize(
    ("name", "count"),
    [("grid", 9), ("composable", 14), ("multistage", 18), ("filter", 18), ("nested", 19)],
)
def test_readme_examples_give_the_stated_counts(name: str, count: int) -> None:
    assert len(compile_file(SWEEPS / f"{name}.yaml").lock_json["jobs"]) == count


def test_grid_names_each_job_from_its_values() -> None:
    names = [j["name"] for j in compile_file(SWEEPS / "grid.yaml").lock_json["jobs"]]
    assert names[:4] == [
        "experiment_0.0001_64",
        "experiment_0.0001_128",
        "experiment_0.0001_256",
        "experiment_0.0005_64",
    ]


def test_filter_removes_exactly_the_excluded_points() -> None:
    jobs = compile_file(SWEEPS / "filter.yaml").lock_json["jobs"]
    pairs = {
        (j["params"]["backend.megatron.lr"], j["params"]["backend.megatron.global_batch_size"])
        for j in jobs
    }
    assert (0.002, 512) not in pairs and (0.002, 1024) not in pairs
    assert (0.002, 256) in pairs and (0.001, 1024) in pairs
    # Indices are assigned before filtering, so they stay stable when a filter changes.
    assert [j["index"] for j in jobs][-1] == 17 and 19 not in [j["index"] for j in jobs]


def test_multistage_wires_each_decay_job_to_its_own_stable_job() -> None:
    bundle = compile_file(SWEEPS / "multistage.yaml")
    jobs = {j["name"]: j for j in bundle.lock_json["jobs"]}
    decays = [j for j in jobs.values() if j["stage"] == "decay6B"]
    assert len(decays) == 9
    for decay in decays:
        lr = decay["params"]["backend.megatron.lr"]
        gbs = decay["params"]["backend.megatron.global_batch_size"]
        stable = f"ms_{lr}_{gbs}_stable"
        assert decay["depends_on"] == [stable]
        assert jobs[stable]["depends_on"] == []
        script = bundle.files[decay["script"]].decode()
        assert f"oellm_load_initial=./output/{stable}/checkpoints\n" in script
        assert '--load "${oellm_load}"' in script
        assert decay["start_conditions"] == [
            {"class_name": "FileExistsCondition", "path": f"./output/{stable}/checkpoints/done.txt"}
        ]
        assert decay["cancel_conditions"] == [
            {"class_name": "SlurmStateCondition", "job_name": stable, "state": "FAILED"}
        ]


def test_product_of_grid_and_stage_list_also_matches_siblings(tmp_path: Path) -> None:
    """DESIGN's second spelling: an lr x gbs grid times a list of stage configs."""
    path = write(
        tmp_path / "exp.yaml",
        """
        defaults:
          - /backend: megatron
        project: {name: p}
        job: {name: "p_${backend.megatron.lr}_${backend.megatron.global_batch_size}_${stage}"}
        sweep:
          type: product
          groups:
            - params:
                backend.megatron.lr: [1e-4, 2e-4]
                backend.megatron.global_batch_size: [8, 16]
            - type: list
              configs:
                - {stage: stable, backend.megatron.train_iters: 1000}
                - stage: decay
                  backend.megatron.train_iters: 200
                  backend.megatron.load: "\\\\${sibling.stable.output_dir}/checkpoints"
                  backend.megatron.override_opt_param_scheduler: true
        """,
    )
    jobs = compile_file(path).lock_json["jobs"]
    assert len(jobs) == 8
    for job in jobs:
        if job["stage"] == "decay":
            assert job["depends_on"] == [job["name"].replace("decay", "stable")]


def test_filtered_sibling_removes_its_dependents(tmp_path: Path) -> None:
    path = write(
        tmp_path / "exp.yaml",
        """
        project: {name: f}
        backend: {bash: {command: "echo ${vars.x}"}}
        job: {name: "f_${vars.x}_${stage}"}
        vars: {x: 0}
        sweep:
          type: list
          groups:
            - params: {vars.x: [1, 2]}
              defaults: {stage: a}
              filter: "\\\\${oc.eval:'\\\\${vars.x} != 1'}"
            - params: {vars.x: [1, 2]}
              defaults: {stage: b, vars.note: "\\\\${sibling.a.name}"}
        """,
    )
    names = [j["name"] for j in compile_file(path).lock_json["jobs"]]
    assert names == ["f_2_a", "f_2_b"]


@pytest.mark.parametrize(
    ("sweep", "words"),
    [
        (
            """
          type: list
          groups:
            - params: {vars.x: [1, 2]}
              defaults: {stage: a}
            - params: {vars.x: [3]}
              defaults: {stage: b, vars.note: "\\\\${sibling.a.name}"}
        """,
            "has no sibling in stage 'a'",
        ),
        (
            """
          type: list
          groups:
            - params: {vars.y: [1, 2]}
              defaults: {stage: a}
            - params: {vars.x: [3]}
              defaults: {stage: b, vars.note: "\\\\${sibling.a.name}"}
        """,
            "has 2 siblings in stage 'a'",
        ),
        (
            """
          type: list
          groups:
            - params: {vars.x: [1]}
              defaults: {stage: a, vars.note: "\\\\${sibling.b.name}"}
            - params: {vars.x: [1]}
              defaults: {stage: b, vars.note: "\\\\${sibling.a.name}"}
        """,
            "cycle",
        ),
        (
            """
          params: {vars.x: [1]}
          defaults: {stage: a, vars.note: "\\\\${sibling.zz.name}"}
        """,
            "no job has stage 'zz'",
        ),
        (
            """
          type: list
          groups:
            - params: {vars.x: [1]}
              defaults: {stage: a}
            - params: {vars.x: [1]}
              defaults: {stage: b, vars.note: "\\\\${sibling.a.checkpoint}"}
        """,
            "the sibling job 'j_1_0_a' (stage 'a') has no key 'checkpoint'",
        ),
        (
            """
          params: {vars.x: [1]}
          defaults: {stage: a, vars.note: "\\\\${sibling.a.name}"}
        """,
            "stage 'a' refers to a sibling in its own stage",
        ),
        (
            """
          params: {vars.note: [a, b]}
        """,
            "two jobs are both named 'j_0_0_None'",
        ),
        (
            """
          params: {vars.x: [1, 2]}
          filter: "\\\\${vars.x}"
        """,
            "a filter must give true or false, got 1",
        ),
    ],
)
def test_sweep_errors(tmp_path: Path, sweep: str, words: str) -> None:
    import textwrap

    head = """
        project: {name: same}
        job: {name: "j_${vars.x}_${vars.y}_${stage}"}
        backend: {bash: {command: hi}}
        vars: {x: 0, y: 0, note: ""}
        sweep:
    """
    body = textwrap.indent(textwrap.dedent(sweep).strip("\n"), "  ")
    path = write(tmp_path / "exp.yaml", textwrap.dedent(head).lstrip("\n") + body + "\n")
    text = rendered(compile_error(path))
    assert words in text
    assert "exp.yaml:" in text


def test_the_same_config_gives_the_same_order_and_bytes() -> None:
    a = compile_file(SWEEPS / "nested.yaml")
    b = compile_file(SWEEPS / "nested.yaml")
    assert a.files == b.files
    assert json.loads(a.files["plan.lock.json"])["jobs"][0]["index"] == 0


def test_a_decay_job_resumes_from_its_own_checkpoint_once_it_has_one(tmp_path: Path) -> None:
    """`--load` is the stable sibling's checkpoint on the first start, the job's own after."""
    from tests.compiler.hostile import run_script

    bundle = compile_file(SWEEPS / "multistage.yaml", env={"OUTPUT_DIR": str(tmp_path / "o")})
    script = bundle.files["jobs/ms_0.001_64_decay6B.sbatch"]

    def load_argument(where: Path) -> bytes:
        argv = run_script(script, where).argv("python")
        return argv[argv.index(b"--load") + 1]

    assert (
        load_argument(tmp_path / "first")
        == str(tmp_path / "o/ms_0.001_64_stable/checkpoints").encode()
    )
    own = tmp_path / "o/ms_0.001_64_decay6B/checkpoints"
    own.mkdir(parents=True)
    (own / "latest_checkpointed_iteration.txt").write_text("200\n")
    assert load_argument(tmp_path / "again") == str(own).encode()


def test_a_backslash_before_dollar_brace_from_the_env_is_refused_in_the_sweep_or_kept_per_job(
    tmp_path: Path,
) -> None:
    """Resolved inside the sweep, `a\\${HOME}b` would read as an escape per job: refused with
    the key named. Resolved per job (the hint's way), it arrives as written."""
    env = {"HV": "a\\${HOME}b"}
    inside = write(
        tmp_path / "inside.yaml",
        """
        project: {name: q}
        job: {name: "j_${vars.i}"}
        vars: {i: 0, v: x}
        backend: {bash: {command: "${vars.v}"}}
        sweep:
          params: {vars.i: [0], vars.v: ["${oc.env:HV}"]}
        """,
    )
    (problem,) = compile_error(inside, env=env).problems
    assert problem.key == "sweep.params.vars.v.0" and "backslash right before" in problem.message
    per_job = write(
        tmp_path / "per_job.yaml",
        """
        project: {name: q}
        job: {name: "j_${vars.i}"}
        vars: {i: 0, v: x, hv: "${oc.env:HV}"}
        backend: {bash: {command: "${vars.v}"}}
        sweep:
          params: {vars.i: [0], vars.v: ["\\\\${vars.hv}"]}
        """,
    )
    bundle = compile_file(per_job, env=env)
    assert bundle.lock_json["jobs"][0]["name"] == "j_0"
    script = bundle.files["jobs/j_0.sbatch"].decode()
    assert "oellm_command='a\\${HOME}b'" in script
