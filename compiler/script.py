"""Plan one job's sbatch script: every decision about what the script says, made once.

`plan_script` turns a checked, resolved job config into a `ScriptPlan`: the `#SBATCH`
directives, the values and exports the script sets, the setup lines and the words of the
launch line. The renderer only lays a plan out through a template; array grouping compares
plans' directives. Refusals live in `checks.py`, which runs before this.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .backends import backend_of
from .tree import KeyPath, Memo, by_identity
from .words import Directive, Word, long_options, scalar

# sbatch splits an #SBATCH line at white space outside double quotes; it has no escapes.
DIRECTIVE_UNSAFE = re.compile(r'["\\\n\r\x00]')
_DIRECTIVE_NEEDS_QUOTES = re.compile(r"[\s'#]")

# A per_gpu launch makes each srun task one rank. SLURM numbers the tasks; torch's env:// init
# reads RANK and WORLD_SIZE, Megatron reads LOCAL_RANK. The values exist only inside each task,
# so a fixed shell line (script code, never config) exports them and execs the real command.
RANK_SHIM = (
    'export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS"; exec "$@"'
)


@dataclass(frozen=True)
class ScriptPlan:
    """Everything a template lays out for one job."""

    template: str
    job_name: str
    stage: str | None
    project: str
    directives: tuple[Directive, ...]
    values: tuple[tuple[str, str], ...]
    exports: tuple[tuple[str, str], ...]
    setup: tuple[str, ...]
    launch: tuple[Word, ...]
    resume: bool
    # per_gpu and per_node need a rendezvous; torchrun also needs the node count and an id.
    rendezvous: bool
    torchrun: bool
    array: bool  # the job runs as a task of an array (its markers are named by the task)

    def array_directives(self) -> tuple[Directive, ...]:
        """The directives that decide whether jobs can share one array: all but the job name
        (the array has its own; all its tasks write to one `--output` pattern)."""
        return tuple(d for d in self.directives if d[0] != "--job-name")


def launch_mode(config: Mapping[str, Any]) -> str:
    return str(config["slurm"].get("launch") or "plain")


def plan_script(config: Mapping[str, Any], array: bool = False) -> ScriptPlan:
    slurm = config["slurm"]
    job = config["job"]
    backend = backend_of(config)
    launch = launch_mode(config)
    return ScriptPlan(
        template=slurm["template"],
        job_name=job["name"],
        stage=config.get("stage"),
        project=config["project"]["name"],
        directives=tuple(_directives(config)),
        values=(
            ("oellm_job_name", job["name"]),
            ("oellm_output_dir", job["base_output_dir"]),
            *backend.values(config),
        ),
        exports=tuple(_exports(config)),
        setup=tuple(slurm.get("setup") or ()),
        launch=tuple(_launch(config, launch)),
        resume=backend.resume(config),
        rendezvous=launch != "plain",
        torchrun=backend.torchrun(launch),
        array=array,
    )


def sbatch_options(config: Mapping[str, Any]) -> Iterator[tuple[str, Any, KeyPath]]:
    """(option, value, where it is set) of every `#SBATCH` line, before formatting."""
    job = config["job"]
    given: dict[str, tuple[Any, KeyPath]] = {
        "job-name": (job["name"], ("job", "name")),
        "output": (job["log_path"], ("job", "log_path")),
    }
    for key, value in config["slurm"]["sbatch"].items():
        given[key.replace("_", "-")] = (value, ("slurm", "sbatch", key))
    if "requeue" not in given and "no-requeue" not in given:
        # One owner of restarts: oellm's policy, unless the config hands them to SLURM.
        given["no-requeue"] = (True, ("slurm", "sbatch"))
    for option, (value, path) in given.items():
        yield option, value, path


def _directives(config: Mapping[str, Any]) -> list[Directive]:
    job = config["job"]
    rest = by_identity(_sbatch_lines, config["slurm"]["sbatch"], _sbatch_directives)
    if rest is None:
        found = (_directive(option, value) for option, value, _ in sbatch_options(config))
        return [directive for directive in found if directive is not None]
    out = [_directive("job-name", job["name"]), _directive("output", job["log_path"])]
    return [*(directive for directive in out if directive is not None), *rest]


def _directive(option: str, value: Any) -> Directive | None:
    if value is None or value is False:
        return None
    if value is True:
        return (f"--{option}", None)
    text = scalar(value)
    if _DIRECTIVE_NEEDS_QUOTES.search(text) or text == "":
        text = f'"{text}"'
    return (f"--{option}", text)


def _sbatch_directives(sbatch: Mapping[str, Any]) -> list[Directive] | None:
    """The `#SBATCH` lines of `slurm.sbatch`, which follow the job's name and output; None
    when it sets one of those two (its value then takes their place)."""
    given = _sbatch_given(sbatch)
    if given is None:
        return None
    found = (_directive(option, value) for option, value in given.items())
    return [directive for directive in found if directive is not None]


def _sbatch_given(sbatch: Mapping[str, Any]) -> dict[str, Any] | None:
    """`slurm.sbatch` by option name, as `sbatch_options` reads it; None when it sets the
    job's name or output."""
    given: dict[str, Any] = {}
    for key, value in sbatch.items():
        given[key.replace("_", "-")] = value
    if "job-name" in given or "output" in given:
        return None
    if "requeue" not in given and "no-requeue" not in given:
        given["no-requeue"] = True
    return given


def sbatch_safe(sbatch: Mapping[str, Any]) -> bool:
    """Whether every value of `slurm.sbatch` can be written on an `#SBATCH` line, and it
    sets neither the job's name nor its output (remembered for the jobs that share it)."""
    return by_identity(_sbatch_checked, sbatch, _safe)


def _safe(sbatch: Mapping[str, Any]) -> bool:
    given = _sbatch_given(sbatch)
    return given is not None and not any(
        DIRECTIVE_UNSAFE.search(scalar(value))
        for value in given.values()
        if value is not None and not isinstance(value, bool)
    )


_sbatch_lines: Memo = {}
_sbatch_checked: Memo = {}


def env_sources(config: Mapping[str, Any]) -> list[tuple[KeyPath, Mapping[str, Any], str]]:
    """(where, env map, name prefix) of each env map the script exports, in order."""
    container = config["container"]
    prefix = "SINGULARITYENV_" if container["runtime"] == "singularity" else "APPTAINERENV_"
    sources: list[tuple[KeyPath, Mapping[str, Any], str]] = [
        (("slurm", "env"), config["slurm"].get("env") or {}, ""),
        (("backend", "env"), config["backend"].get("env") or {}, ""),
    ]
    if container["runtime"] != "none":
        # The runtime copies <PREFIX>NAME into the container as NAME: values pass unchanged.
        sources.append((("container", "env"), container.get("env") or {}, prefix))
    return sources


def _exports(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    # The backend's first, so that a config's own WANDB_RUN_ID or WANDB_RESUME wins.
    out: dict[str, str] = dict(backend_of(config).exports(config))
    for _, env, name_prefix in env_sources(config):
        for name, value in env.items():
            if value is None:
                out.pop(name_prefix + name, None)
                continue
            out[name_prefix + name] = scalar(value)
    return list(out.items())


def _launch(config: Mapping[str, Any], launch: str) -> list[Word]:
    slurm = config["slurm"]
    container = config["container"]
    # The words before the program, laid out: the same for every job that shares its slurm
    # and container parts (kept here with them, so that their ids are not taken meanwhile).
    found = _prefixes.get((id(slurm), id(container), launch))
    if found is None or found[0] is not slurm or found[1] is not container:
        if len(_prefixes) >= _MAX_PREFIXES:
            _prefixes.clear()
        found = (slurm, container, _laid_out(_prefix(slurm, container, launch), 0))
        _prefixes[(id(slurm), id(container), launch)] = found
    prefix = found[2]
    program = backend_of(config).launch_words(config, launch)
    if prefix and program:
        # The program starts a line of its own after srun's and the container's words.
        first = program[0]
        program[0] = Word(first.text, True, first.ref, first.separator)
    return [*prefix, *_laid_out(program, len(prefix))]


_MAX_PREFIXES = 64
_prefixes: dict[tuple[int, int, str], tuple[Any, Any, list[Word]]] = {}


def _prefix(slurm: Mapping[str, Any], container: Mapping[str, Any], launch: str) -> list[Word]:
    """srun's words, the launcher's and the container's."""
    words: list[Word] = []
    if slurm.get("use_srun", True):
        words.append(Word("srun"))
        words.extend(long_options(slurm.get("srun") or {}))
    if launch == "per_gpu":
        # `bash -c SHIM NAME ARGV...`: the shim sees ARGV as "$@", so config words stay words.
        words.extend(
            [Word("bash", new_line=bool(words)), Word("-c"), Word(RANK_SHIM), Word("oellm-task")]
        )
    for index, token in enumerate(slurm.get("launcher_cmd") or []):
        words.append(Word(token, new_line=index == 0 and bool(words)))
    if container["runtime"] != "none":
        words.append(Word(container["runtime"], new_line=bool(words)))
        words.append(Word("exec"))
        gpu = container.get("gpu", "none")
        if gpu != "none":
            words.append(Word(f"--{gpu}"))
        for bind in container.get("binds") or []:
            words.extend([Word("--bind", True), Word(bind)])
        for option in container.get("options") or []:
            words.append(Word(option, True))
        words.append(Word(container["image"], True))
    return words


def _laid_out(words: list[Word], start: int) -> list[Word]:
    """Words from number `start` of the launch line on, each with the separator before it.
    Layout: long launch lines break before options, so diffs of bundles stay readable.
    (Words made directly: dataclasses.replace costs more than the rest of the plan.)"""
    return [
        Word(w.text, w.new_line, w.ref, "" if i == 0 else (" \\\n  " if w.new_line else " "))
        for i, w in enumerate(words, start)
    ]
