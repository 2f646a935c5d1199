"""The hostile-values proof: every config value that reaches the shell arrives byte-exact.

Each value of `hostile.HOSTILE` goes through each channel by which a config value reaches a job
script. It arrives through `${oc.env:...}`, as hostile values usually do, so that YAML and
interpolation leave it alone. The compiled script must pass `bash -n`. Run with fakes for srun,
apptainer, singularity and python, it must hand the program exactly the configured bytes; a
value that cannot be written safely must instead be refused with a ConfigError naming its key
(HOUSE_STYLE 4).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from oellm.compiler.env_values import shell_reference
from oellm.compiler.errors import ConfigError
from tests.compiler.hostile import HOSTILE, JOB_ID, Run, run_script
from tests.helpers import compile_file, write

IN = '"${oc.env:HOSTILE}"'
"""Where a channel's experiment takes the hostile value: from the environment, verbatim."""

BASH_TRUE = ["bash", "-c", "true"]
IMAGE = "/images/train.sif"
ENTRYPOINT = "/opt/Megatron-LM/pretrain_gpt.py"


def words(*texts: str) -> list[bytes]:
    return [t.encode() for t in texts]


def directive(value: str) -> str:
    """How a value must appear on an #SBATCH line: sbatch splits the line at white space and
    reads `'` and `#` itself, so such values (and the empty one) go in double quotes."""
    return f'"{value}"' if value == "" or re.search(r"[\s'#]", value) else value


def sbatch_unsafe(value: str) -> bool:
    """An #SBATCH line cannot carry a double quote, a backslash or a line break."""
    return any(c in value for c in '"\\\n\r')


@dataclass(frozen=True)
class Channel:
    """One way into the script: an experiment file, the check after the run, and which values
    must be refused (the key the ConfigError names, or None when the value is fine)."""

    experiment: str
    check: Callable[[str, Run, str], None]  # (value, run, script text)
    refused: Callable[[str], str | None] = lambda value: None
    env_name: str = "HOSTILE"
    overrides: Sequence[str] = ()


def refuse_shell_syntax(key: str) -> Callable[[str], str | None]:
    """Env values with `$NAME` or `${NAME}` are refused: they would arrive unexpanded."""
    return lambda value: key if shell_reference(value) else None


def refuse_empty(key: str) -> Callable[[str], str | None]:
    return lambda value: key if value == "" else None


def argv_of(fake: str, *expected: str) -> Callable[[str, Run, str], None]:
    """The fake's argv must be `expected`, with the value put wherever a word says HOSTILE."""

    def check(value: str, run: Run, script: str) -> None:
        assert run.argv(fake) == [word.replace("HOSTILE", value).encode() for word in expected]

    return check


def env_value(fake: str, name: str) -> Callable[[str, Run, str], None]:
    def check(value: str, run: Run, script: str) -> None:
        assert run.env(fake)[name.encode()] == value.encode()

    return check


def check_directive(value: str, run: Run, script: str) -> None:
    assert f"\n#SBATCH --comment={directive(value)}\n" in script
    assert run.argv("srun") == words(*BASH_TRUE)


def check_output_dir(value: str, run: Run, script: str) -> None:
    assert f"\n#SBATCH --output={directive(value + '/q/slurm-%j.log')}\n" in script
    markers = Path(run.cwd, value + "/q", ".oellm")
    assert sorted(p.name for p in markers.iterdir()) == [f"{JOB_ID}.exit", f"{JOB_ID}.started"]
    assert (markers / f"{JOB_ID}.exit").read_text() == "0\n"
    assert run.argv("srun") == words(*BASH_TRUE)


def doc(*parts: str) -> str:
    """An experiment file from indented snippets, each dedented on its own."""
    return "".join(textwrap.dedent(part).lstrip("\n") for part in parts)


BASH = doc(
    """
    project: {name: q}
    backend: {bash: {command: "true"}}
    """
)
APPTAINER = doc(
    """
    defaults:
      - /container: apptainer
    """,
    BASH,
)
MEGATRON = doc(
    """
    defaults:
      - /backend: megatron
    project: {name: q}
    """
)

CHANNELS: dict[str, Channel] = {
    "bash_command": Channel(
        doc(
            f"""
            project: {{name: q}}
            backend: {{bash: {{command: {IN}}}}}
            """
        ),
        argv_of("srun", "bash", "-c", "HOSTILE"),
        refuse_empty("backend.bash.command"),
    ),
    "bash_command_override": Channel(
        BASH,
        argv_of("srun", "bash", "-c", "HOSTILE"),
        refuse_empty("backend.bash.command"),
        overrides=["backend.bash.command=${oc.env:HOSTILE}"],
    ),
    # Spliced into text through another key: the result is text, never parsed again.
    "bash_command_in_text": Channel(
        doc(
            """
            project: {name: q}
            vars: {word: "${oc.env:HOSTILE}"}
            backend: {bash: {command: "echo <${vars.word}>"}}
            """
        ),
        argv_of("srun", "bash", "-c", "echo <HOSTILE>"),
    ),
    "sweep_value": Channel(
        doc(
            BASH,
            f"""
            sweep:
              configs:
                - backend.bash.command: {IN}
            """,
        ),
        argv_of("srun", "bash", "-c", "HOSTILE"),
        # A backslash right before '${' in a value resolved inside the sweep would read as an
        # escape per job: refused, with the sweep key named.
        lambda value: (
            "backend.bash.command"
            if value == ""
            else ("sweep.configs.0.backend.bash.command" if "\\${" in value else None)
        ),
    ),
    "slurm_env": Channel(
        doc(BASH, f"slurm: {{env: {{OELLM_HOSTILE: {IN}}}}}\n"),
        env_value("srun", "OELLM_HOSTILE"),
        refuse_shell_syntax("slurm.env.OELLM_HOSTILE"),
    ),
    "backend_env": Channel(
        doc(
            MEGATRON,
            f"""
            backend:
              env: {{OELLM_HOSTILE: {IN}}}
              megatron: {{save: null}}
            """,
        ),
        env_value("python", "OELLM_HOSTILE"),
        refuse_shell_syntax("backend.env.OELLM_HOSTILE"),
    ),
    "apptainer_env": Channel(
        doc(APPTAINER, f"container: {{image: {IMAGE}, env: {{OELLM_HOSTILE: {IN}}}}}\n"),
        env_value("apptainer", "APPTAINERENV_OELLM_HOSTILE"),
        refuse_shell_syntax("container.env.OELLM_HOSTILE"),
    ),
    "singularity_env": Channel(
        doc(
            APPTAINER,
            f"container: {{runtime: singularity, image: {IMAGE}, env: {{OELLM_HOSTILE: {IN}}}}}\n",
        ),
        env_value("singularity", "SINGULARITYENV_OELLM_HOSTILE"),
        refuse_shell_syntax("container.env.OELLM_HOSTILE"),
    ),
    "container_image": Channel(
        doc(APPTAINER, f"container: {{image: {IN}}}\n"),
        argv_of("apptainer", "exec", "--nv", "HOSTILE", *BASH_TRUE),
        refuse_empty("container.image"),
    ),
    "container_bind": Channel(
        doc(APPTAINER, f"container: {{image: {IMAGE}, binds: [{IN}, /data:/data]}}\n"),
        argv_of(
            "apptainer",
            "exec",
            "--nv",
            "--bind",
            "HOSTILE",
            "--bind",
            "/data:/data",
            IMAGE,
            *BASH_TRUE,
        ),
        refuse_empty("container.binds.0"),
    ),
    "container_option": Channel(
        doc(APPTAINER, f"container: {{image: {IMAGE}, options: [{IN}]}}\n"),
        argv_of("apptainer", "exec", "--nv", "HOSTILE", IMAGE, *BASH_TRUE),
    ),
    "megatron_args": Channel(
        doc(
            MEGATRON,
            f"""
            backend:
              megatron:
                data_path: [{IN}, "1.0", {IN}]
                tokenizer_model: {IN}
                save: {IN}
                load: {IN}
            """,
        ),
        argv_of(
            "python",
            "-u",
            ENTRYPOINT,
            "--data-path",
            "HOSTILE",
            "1.0",
            "HOSTILE",
            "--load",
            "HOSTILE",
            "--save",
            "HOSTILE",
            "--tokenizer-model",
            "HOSTILE",
        ),
    ),
    "megatron_launcher": Channel(
        doc(
            MEGATRON,
            f"""
            backend:
              launcher: [python, {IN}]
              megatron: {{save: null}}
            """,
        ),
        argv_of("python", "HOSTILE", ENTRYPOINT),
    ),
    # The library's entrypoint is ${oc.env:MEGATRON_LM_DIR,...}/pretrain_gpt.py.
    "megatron_lm_dir": Channel(
        doc(MEGATRON, "backend: {megatron: {save: null}}\n"),
        argv_of("python", "-u", "HOSTILE/pretrain_gpt.py"),
        env_name="MEGATRON_LM_DIR",
    ),
    # lm_eval and the converter take `--flag=value` words: a value starting with a dash stays
    # a value. `python -m lm_eval` so that the python fake records the argv.
    "lm_eval_args": Channel(
        doc(
            f"""
            defaults:
              - /backend: lm_eval
            project: {{name: q}}
            backend:
              lm_eval:
                command: [python, -m, lm_eval]
                pretrained: {IN}
                model_args: {{tokenizer: {IN}}}
                tasks: [{IN}]
                device: {IN}
                output_path: {IN}
                options: {{seed: {IN}}}
            """
        ),
        argv_of(
            "python",
            "-m",
            "lm_eval",
            "--model=hf",
            "--model_args=pretrained=HOSTILE,tokenizer=HOSTILE",
            "--tasks=HOSTILE",
            "--batch_size=auto",
            "--device=HOSTILE",
            "--output_path=HOSTILE",
            "--seed=HOSTILE",
        ),
        lambda value: "backend.lm_eval.pretrained" if value == "" else None,
    ),
    "megatron_to_hf_args": Channel(
        doc(
            f"""
            defaults:
              - /backend: megatron_to_hf
            project: {{name: q}}
            backend:
              megatron_to_hf:
                command: [python, {IN}]
                checkpoint: {IN}
                iteration: 7
                output_dir: {IN}
                options: {{hf-model: {IN}}}
            """
        ),
        argv_of(
            "python",
            "HOSTILE",
            "--hf-model=HOSTILE",
            "--hf-path=HOSTILE",
            "--megatron-path=HOSTILE/iter_0000007",
        ),
        refuse_empty("backend.megatron_to_hf.command.1"),
    ),
    "launcher_cmd": Channel(
        doc(BASH, f"slurm: {{launcher_cmd: [{IN}, --verbose]}}\n"),
        argv_of("srun", "HOSTILE", "--verbose", *BASH_TRUE),
    ),
    "srun_option": Channel(
        doc(BASH, f"slurm: {{srun: {{comment: {IN}}}}}\n"),
        argv_of("srun", "--comment=HOSTILE", *BASH_TRUE),
    ),
    "sbatch_directive": Channel(
        doc(BASH, f"slurm: {{sbatch: {{comment: {IN}}}}}\n"),
        check_directive,
        lambda value: "slurm.sbatch.comment" if sbatch_unsafe(value) else None,
    ),
    # The library's output_dir is ${oc.env:OUTPUT_DIR,./output}; job paths are built on it.
    "output_dir": Channel(
        BASH,
        check_output_dir,
        lambda value: (
            "project.output_dir"
            if value == ""
            else ("job.log_path" if sbatch_unsafe(value) else None)
        ),
        env_name="OUTPUT_DIR",
    ),
    # Job names become file names and #SBATCH values: only a safe alphabet is accepted.
    "project_name": Channel(
        doc(
            f"""
            project: {{name: {IN}}}
            backend: {{bash: {{command: "true"}}}}
            """
        ),
        lambda value, run, script: None,
        lambda value: "job.name",
    ),
}

KNOWN_BUGS: dict[tuple[str, str], str] = {}


def cases() -> list[object]:
    out: list[object] = []
    for channel in CHANNELS:
        for value_id in HOSTILE:
            reason = KNOWN_BUGS.get((channel, value_id))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(channel, value_id, marks=marks, id=f"{channel}-{value_id}"))
    return out


@pytest.mark.parametrize(("channel_id", "value_id"), cases())
def test_value_arrives_byte_exact_or_is_refused(
    channel_id: str, value_id: str, tmp_path: Path
) -> None:
    channel, value = CHANNELS[channel_id], HOSTILE[value_id]
    experiment = write(tmp_path / "experiment.yaml", channel.experiment)
    env = {channel.env_name: value}
    refused_key = channel.refused(value)
    if refused_key is not None:
        with pytest.raises(ConfigError) as caught:
            compile_file(experiment, channel.overrides, env)
        keys = [p.key for p in caught.value.problems]
        assert refused_key in keys, caught.value
        assert all(p.message for p in caught.value.problems)
        return
    bundle = compile_file(experiment, channel.overrides, env)
    (script_name,) = [n for n in bundle.files if n.startswith("jobs/") and n.endswith(".sbatch")]
    script = bundle.files[script_name]
    run = run_script(script, tmp_path / "run")
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    channel.check(value, run, script.decode())


def test_every_hostile_value_is_in_the_grid() -> None:
    """The grid is HOSTILE x CHANNELS: a value added to the fixture reaches every channel."""
    assert len(cases()) == len(HOSTILE) * len(CHANNELS)
    assert len(set(HOSTILE.values())) == len(HOSTILE)


# --- Places outside the grid where this proof found holes (now fixed; kept as regressions) ---


def test_project_name_cannot_escape_the_header_comment(tmp_path: Path) -> None:
    """project.name is written into the script's header comment: a newline must not end it."""
    experiment = write(
        tmp_path / "experiment.yaml",
        """
        project: {name: "${oc.env:HOSTILE}"}
        job: {name: safe}
        backend: {bash: {command: "true"}}
        """,
    )
    try:
        bundle = compile_file(experiment, env={"HOSTILE": "x\ntouch pwned #"})
    except ConfigError as error:
        assert "project.name" in [p.key for p in error.problems]
        return
    run = run_script(bundle.files["jobs/safe.sbatch"], tmp_path / "run")
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert not (run.cwd / "pwned").exists()


def test_stage_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    """A schema `pattern` ending in `$` also matches before a final newline under re.search."""
    experiment = write(
        tmp_path / "experiment.yaml",
        """
        project: {name: q}
        stage: "a\\n"
        backend: {bash: {command: "true"}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        compile_file(experiment)
    assert "stage" in [p.key for p in caught.value.problems]


def test_sbatch_option_name_cannot_end_the_directive_line(tmp_path: Path) -> None:
    """An option name with a trailing newline would end the #SBATCH line, and bash would run
    the rest of the directive."""
    experiment = write(
        tmp_path / "experiment.yaml",
        """
        project: {name: q}
        backend: {bash: {command: "true"}}
        slurm: {sbatch: {"comment\\n": "$(touch pwned)"}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        compile_file(experiment)
    assert "slurm.sbatch" in [p.key for p in caught.value.problems]


def test_nul_byte_is_refused(tmp_path: Path) -> None:
    """argv and the environment cannot carry a NUL, and bash drops it from a script silently."""
    experiment = write(
        tmp_path / "experiment.yaml",
        """
        project: {name: q}
        backend: {bash: {command: "echo a\\0b"}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        compile_file(experiment)
    assert "backend.bash.command" in [p.key for p in caught.value.problems]


def test_sbatch_refusal_names_the_key_as_written(tmp_path: Path) -> None:
    """The #SBATCH option is spelled with dashes, but the error names the user's key."""
    experiment = write(
        tmp_path / "experiment.yaml",
        """
        project: {name: q}
        backend: {bash: {command: "true"}}
        slurm: {sbatch: {mail_user: "${oc.env:HOSTILE}"}}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        compile_file(experiment, env={"HOSTILE": 'a"b'})
    (problem,) = caught.value.problems
    assert problem.key == "slurm.sbatch.mail_user"
    assert problem.origin is not None
    assert (Path(problem.origin.file).name, problem.origin.line) == ("experiment.yaml", 3)
