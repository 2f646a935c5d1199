from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.compiler.errors import ConfigError
from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.write import write_bundle
from oellm.lockfile.schema import validator as lock_validator
from tests.helpers import EXAMPLES, REPO, compile_error, compile_file, rendered, write


def test_lockfile_contents_and_schema() -> None:
    bundle = compile_file(EXAMPLES / "megatron_tiny.yaml", overrides=["backend.megatron.lr=3e-4"])
    lock = json.loads(bundle.files["plan.lock.json"])
    assert lock["version"] == 1
    (job,) = lock["jobs"]
    assert job["name"] == "megatron_tiny"
    assert job["params"] == {"backend.megatron.lr": 0.0003}
    assert job["script"] == "jobs/megatron_tiny.sbatch"
    assert job["sha256"] == hashlib.sha256(bundle.files[job["script"]]).hexdigest()
    assert job["output_dir"] == "./output/megatron_tiny"
    assert "--lr 0.0003" in bundle.files[job["script"]].decode()
    assert list(lock_validator().iter_errors(lock)) == []


def test_bundle_id_is_a_content_hash() -> None:
    a = compile_file(EXAMPLES / "demo.yaml").lock_json["bundle_id"]
    b = compile_file(EXAMPLES / "demo.yaml", overrides=["job.chain_repeat=2"]).lock_json[
        "bundle_id"
    ]
    assert a != b and len(a) == 64


def test_byte_identical_across_runs_and_working_directories(tmp_path: Path) -> None:
    """Two separate processes, different working directories: the same bytes."""
    outs = []
    for n, cwd in enumerate([tmp_path / "one", tmp_path / "two" / "deeper"]):
        cwd.mkdir(parents=True)
        out = tmp_path / f"bundle{n}"
        env = {k: v for k, v in os.environ.items() if k != "OUTPUT_DIR"}
        env["PYTHONHASHSEED"] = str(n + 1)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "oellm",
                "compile",
                str(EXAMPLES / "megatron_tiny.yaml"),
                "-o",
                str(out),
            ],
            cwd=cwd,
            env=env,
            check=True,
            capture_output=True,
        )
        outs.append(
            {
                p.relative_to(out).as_posix(): p.read_bytes()
                for p in sorted(out.rglob("*"))
                if p.is_file()
            }
        )
    assert outs[0] == outs[1]
    # No file names the compiling machine's folders: not the lock, not the job configs.
    assert "jobs/megatron_tiny.config.json" in outs[0]
    assert not [name for name, data in outs[0].items() if str(tmp_path).encode() in data]


def test_write_replaces_a_bundle_atomically(tmp_path: Path) -> None:
    out = tmp_path / "b"
    write_bundle(compile_file(EXAMPLES / "demo.yaml"), out)
    (out / "jobs" / "stale.sbatch").write_text("old")
    write_bundle(compile_file(EXAMPLES / "megatron_tiny.yaml"), out)
    assert sorted(p.name for p in (out / "jobs").iterdir()) == [
        "megatron_tiny.config.json",
        "megatron_tiny.sbatch",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging left behind
    assert os.access(out / "jobs" / "megatron_tiny.sbatch", os.X_OK)


def test_write_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="refusing to replace"):
        write_bundle(compile_file(EXAMPLES / "demo.yaml"), out)
    assert (out / "thesis.tex").read_text() == "x"


def test_failed_compile_leaves_the_old_bundle(tmp_path: Path) -> None:
    out = tmp_path / "b"
    write_bundle(compile_file(EXAMPLES / "demo.yaml"), out)
    before = (out / "plan.lock.json").read_bytes()
    bad = write(tmp_path / "bad.yaml", "project: {name: x}\nbackend: {bash: {command: 1}}\n")
    with pytest.raises(ConfigError):
        write_bundle(compile_file(bad), out)
    assert (out / "plan.lock.json").read_bytes() == before


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        (
            "project: {name: x}\nbackend: {bash: {command: hi}}\nslurm: {sbatch: {nodes: many}}\n",
            [],
            None,
        ),
        (
            "project: {name: x}\nbackend: {bash: {command: 5}}\n",
            [],
            "bad.yaml:2:18: backend.bash.command: expected string, got 5",
        ),
        (
            "project: {name: x}\nbackend: {bash: {command: hi}}\njob: {nmae: y}\n",
            [],
            "bad.yaml:3:7: job: unknown key 'nmae'\n  hint: did you mean 'name'?",
        ),
        (
            "project: {name: 'bad name'}\nbackend: {bash: {command: hi}}\n",
            [],
            'bad.yaml:1:11: job.name: "bad name" does not match',
        ),
        (
            "defaults:\n  - /backend: megatron\nproject: {name: x}\nbackend:\n  megatron:\n"
            "    lrr: 1\n",
            [],
            "bad.yaml:6:5: backend.megatron: unknown argument 'lrr'\n  hint: did you mean 'lr'?",
        ),
        (
            "defaults:\n  - /backend: megatron\nproject: {name: x}\nbackend:\n  megatron:\n"
            "    lr_decay_style: cosin\n",
            [],
            'bad.yaml:6:5: backend.megatron.lr_decay_style: "cosin" is not one of',
        ),
        ("project: {name: x}\n", [], "backend.bash.command: missing mandatory value"),
        (
            "defaults:\n  - /container: apptainer\nproject: {name: x}\n"
            "backend: {bash: {command: hi}}\n",
            [],
            "container.image: missing mandatory value",
        ),
    ],
)
def test_validation_messages(
    tmp_path: Path, text: str, overrides: list[str], expected: str | None
) -> None:
    path = write(tmp_path / "bad.yaml", text)
    if expected is None:
        # A non-numeric node count is sbatch's business: it is passed on, quoted if needed.
        assert "#SBATCH --nodes=many" in compile_file(path).files["jobs/x.sbatch"].decode()
        return
    message = rendered(compile_error(path, overrides))
    assert expected in message.replace(str(tmp_path) + "/", "")


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        """
        project: {name: x, colour: red}
        backend: {bash: {command: 1}}
        job: {chain_repeat: 0}
        """,
    )
    problems = compile_error(path).problems
    assert len(problems) == 3
    assert [p.line for p in (q.origin for q in problems) if p] == [1, 2, 3]


def test_sbatch_directive_values_are_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.yaml",
        """
        project: {name: x}
        backend: {bash: {command: hi}}
        slurm: {sbatch: {comment: 'two words', constraint: 'a"b'}}
        """,
    )
    message = rendered(compile_error(path))
    assert "slurm.sbatch.constraint" in message and "#SBATCH" in message


def test_compile_uses_the_given_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "e.yaml", "project: {name: x}\nbackend: {bash: {command: hi}}\n")
    bundle = compile_bundle(CompileRequest(experiment=path, env={"OUTPUT_DIR": "/scratch/o"}))
    assert bundle.lock_json["jobs"][0]["output_dir"] == "/scratch/o/x"
    assert bundle.lock_json["project"]["state_dir"] == "/scratch/o/.oellm/x"


def test_examples_dir_is_the_builtin_library() -> None:
    assert (REPO / "config" / "oellm.yaml").is_file()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "project: {name: x}\nbackend: {bash: {command: hi}}\njob:\n  log_events:\n"
            "    - {name: e, kind: regex, pattern: '(unclosed', actions: [{kind: finish}]}\n",
            "job.log_events.0.pattern: invalid regular expression",
        ),
        (
            "defaults:\n  - /backend: megatron\nproject: {name: x}\n"
            "backend: {megatron: {exit_signal_handler: true}}\n",
            "backend.megatron.exit_signal_handler: Megatron's exit signal handler never runs",
        ),
        (
            "defaults:\n  - /backend: megatron\nproject: {name: x}\n"
            "slurm: {sbatch: {signal: 'TERM@300'}}\n",
            "slurm.sbatch.signal: signal 'TERM@300' would stop Megatron",
        ),
    ],
)
def test_semantic_checks(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    assert words in rendered(compile_error(path))


def test_signal_with_handler_compiles(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ok.yaml",
        "defaults:\n  - /backend: megatron\nproject: {name: x}\n"
        "slurm: {sbatch: {signal: 'TERM@300'}}\n"
        "backend: {megatron: {exit_signal_handler: true}}\n",
    )
    script = compile_file(path).files["jobs/x.sbatch"].decode()
    assert "#SBATCH --signal=TERM@300" in script and "--exit-signal-handler" in script


def test_one_owner_of_restarts(tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.yaml", "project: {name: x}\nbackend: {bash: {command: hi}}\n")
    assert "#SBATCH --no-requeue\n" in compile_file(ok).files["jobs/x.sbatch"].decode()
    both = write(
        tmp_path / "both.yaml",
        "project: {name: x}\nbackend: {bash: {command: hi}}\nslurm: {sbatch: {requeue: true}}\n",
    )
    assert "the same failure would run twice" in rendered(compile_error(both))
    slurm_owns = write(
        tmp_path / "slurm.yaml",
        "project: {name: x}\nbackend: {bash: {command: hi}}\n"
        "slurm: {sbatch: {requeue: true}}\njob: {restart: {on: [TIMEOUT]}}\n",
    )
    script = compile_file(slurm_owns).files["jobs/x.sbatch"].decode()
    assert "#SBATCH --requeue\n" in script and "--no-requeue" not in script


def test_a_project_value_that_is_not_text_is_refused_even_when_swept(tmp_path: Path) -> None:
    """The sweep sets project.output_dir per job; the bundle's own project comes from the base
    config, which the per-job validation does not see."""
    exp = write(
        tmp_path / "exp.yaml",
        """
        project: {name: x, output_dir: false}
        backend: {bash: {command: "true"}}
        job: {name: "j_${vars.i}_${project.output_dir}"}
        vars: {i: 0}
        sweep: {params: {vars.i: [1, 2], project.output_dir: [a, b]}}
        """,
    )
    error = compile_error(exp)
    assert rendered(error).startswith(f"{exp}:1:20: project.output_dir: must be text")


def test_a_swept_value_is_a_template_when_its_json_text_holds_one() -> None:
    from oellm.compiler.point_work import _templated

    values: list[object] = [
        "${a}",
        "\\${a}",
        "$ {a}",
        "$\n{",
        "ü${",
        "x",
        "",
        1,
        1.5,
        True,
        None,
        ["${a}"],
        {"k": "${b}"},
        {"${k}": 1},
        [1, "y"],
    ]
    for value in values:
        assert _templated(value) == ("${" in json.dumps(value)), value
