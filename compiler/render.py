"""Render one job's resolved config into an sbatch script through a Jinja2 template.

All decisions live here in Python; templates only lay words out. Every config value that reaches
the shell passes through one filter, `q` (shlex.quote), or is refused when it cannot be quoted
(an `#SBATCH` line is parsed by sbatch, not by a shell).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from .errors import Origin, fail
from .limits import check_array_spec, check_machine, check_signal
from .load import Path_
from .megatron import megatron_argv
from .tree import origin_of
from .wandb import wandb_args, wandb_exports

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# sbatch splits an #SBATCH line at white space outside double quotes; it has no escapes.
_DIRECTIVE_UNSAFE = re.compile(r'["\\\n\r\x00]')
_DIRECTIVE_NEEDS_QUOTES = re.compile(r"[\s'#]")

# A per_gpu launch makes each srun task one rank. SLURM numbers the tasks; torch's env:// init
# reads RANK and WORLD_SIZE, Megatron reads LOCAL_RANK. The values exist only inside each task,
# so a fixed shell line (script code, never config) exports them and execs the real command.
RANK_SHIM = (
    'export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS"; exec "$@"'
)


Directive = tuple[str, str | None]  # ("--time", "10"); a bare flag has None


@dataclass(frozen=True)
class Word:
    """One argv word of the launch line; `ref` words expand a script variable."""

    text: str
    new_line: bool = False
    ref: bool = False
    separator: str = ""


def quote(value: object) -> str:
    """The one quoting choke point for config values that reach the shell."""
    if isinstance(value, Word):
        return f'"${{{value.text}}}"' if value.ref else shlex.quote(value.text)
    if isinstance(value, bool):
        value = "true" if value else "false"
    return shlex.quote(value if isinstance(value, str) else _scalar(value))


@functools.cache
def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(importlib.resources.files("oellm.templates")))
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = quote
    env.filters["comment"] = _comment
    return env


def render_script(
    config: Mapping[str, Any], origins: Mapping[Path_, Origin], array: bool = False
) -> str:
    """`array`: the job runs as a task of an array (its markers are named by the task)."""
    slurm = config["slurm"]
    job = config["job"]
    launch = _check_launch(config, origins)
    check_array_spec(config, origins)
    check_machine(config, origins)
    check_signal(config, origins, launch)
    context = {
        "job_name": job["name"],
        "stage": config.get("stage"),
        "project": config["project"]["name"],
        "directives": _directives(config, origins),
        "values": [
            ("oellm_job_name", job["name"]),
            ("oellm_output_dir", job["base_output_dir"]),
            *(
                [("oellm_command", config["backend"]["bash"]["command"])]
                if _is_bash(config)
                else []
            ),
            *_resume_values(config),
        ],
        "resume": bool(_resume_values(config)),
        "exports": _exports(config, origins),
        "setup": list(slurm.get("setup") or []),
        "launch": _launch(config, launch),
        # per_gpu and per_node need a rendezvous; torchrun also needs the node count and an id.
        "rendezvous": launch != "plain",
        "torchrun": launch == "per_node" and not _is_bash(config),
        "array": array,
    }
    try:
        template = _environment().get_template(slurm["template"])
    except jinja2.TemplateNotFound:
        raise fail(
            f"no template '{slurm['template']}' in oellm's templates",
            origin_of(origins, ("slurm", "template")),
            key="slurm.template",
        ) from None
    return template.render(**context)


def array_directives(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> list[Directive]:
    """The directives that decide whether jobs can share one array: all but the job name
    (the array has its own; all its tasks write to one `--output` pattern)."""
    return [d for d in _directives(config, origins) if d[0] != "--job-name"]


def render_array_script(
    *,
    group: str,
    stage: str | None,
    project: str,
    directives: list[Directive],
    tasks: list[tuple[int, str, str]],
    snapshots: str,
) -> str:
    """The shared script of one array: `tasks` are (index, job script, its sha256);
    `snapshots` the folder (relative to the bundle's root) where the reconciler keeps a copy
    of each member script it submitted, named by its sha256."""
    template = _environment().get_template("array.sbatch.j2")
    return template.render(
        group=group,
        stage=stage,
        project=project,
        directives=directives,
        tasks=tasks,
        snapshots=snapshots,
    )


def _comment(value: object) -> str:
    """Text for a `#` comment line: control characters would end the comment, so mask them."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


def _is_bash(config: Mapping[str, Any]) -> bool:
    return bool(config["backend"]["kind"] == "bash")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _directives(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> list[Directive]:
    job = config["job"]
    out: list[Directive] = []
    given: dict[str, tuple[Any, Path_]] = {
        "job-name": (job["name"], ("job", "name")),
        "output": (job["log_path"], ("job", "log_path")),
    }
    for key, value in config["slurm"]["sbatch"].items():
        given[key.replace("_", "-")] = (value, ("slurm", "sbatch", key))
    if "requeue" not in given and "no-requeue" not in given:
        # One owner of restarts: oellm's policy, unless the config hands them to SLURM.
        given["no-requeue"] = (True, ("slurm", "sbatch"))
    for option, (value, path) in given.items():
        if value is None or value is False:
            continue
        if value is True:
            out.append((f"--{option}", None))
            continue
        text = _scalar(value)
        if _DIRECTIVE_UNSAFE.search(text):
            raise fail(
                f"value {text!r} cannot be written on an #SBATCH line",
                origin_of(origins, path),
                key=".".join(map(str, path)),
                hint="sbatch reads #SBATCH lines itself: no double quotes, backslashes or newlines",
            )
        if _DIRECTIVE_NEEDS_QUOTES.search(text) or text == "":
            text = f'"{text}"'
        out.append((f"--{option}", text))
    return out


def _exports(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> list[tuple[str, str]]:
    out: dict[str, str] = {}
    container = config["container"]
    prefix = "SINGULARITYENV_" if container["runtime"] == "singularity" else "APPTAINERENV_"
    sources: list[tuple[Path_, Mapping[str, Any], str]] = [
        (("slurm", "env"), config["slurm"].get("env") or {}, ""),
        (("backend", "env"), config["backend"].get("env") or {}, ""),
    ]
    if container["runtime"] != "none":
        # The runtime copies <PREFIX>NAME into the container as NAME: values pass unchanged.
        sources.append((("container", "env"), container.get("env") or {}, prefix))
    # Exported first, so that a config's own WANDB_RUN_ID or WANDB_RESUME wins.
    out.update(wandb_exports(config))
    for path, env, name_prefix in sources:
        for name, value in env.items():
            if not _ENV_NAME.fullmatch(name):
                raise fail(
                    f"'{name}' is not a valid environment variable name",
                    origin_of(origins, (*path, name)),
                    key=".".join(map(str, path)),
                )
            if value is None:
                out.pop(name_prefix + name, None)
                continue
            out[name_prefix + name] = _scalar(value)
    return list(out.items())


def _check_launch(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> str:
    """The launch mode, after checking that the preset's task layout fits it."""
    slurm = config["slurm"]
    launch = str(slurm.get("launch") or "plain")
    tasks = slurm["sbatch"].get("ntasks_per_node", slurm["sbatch"].get("ntasks-per-node"))
    gpus = int(slurm.get("gpus_per_node") or 0)
    where = origin_of(origins, ("slurm", "launch"))
    if launch == "per_gpu" and not slurm.get("use_srun", True):
        raise fail(
            "launch per_gpu needs srun: each rank is one srun task",
            origin_of(origins, ("slurm", "use_srun")),
            key="slurm.use_srun",
        )
    if launch == "per_gpu" and gpus and tasks is not None and tasks != gpus:
        raise fail(
            f"launch per_gpu starts one task per GPU, but ntasks_per_node is {tasks} "
            f"and gpus_per_node is {gpus}",
            origin_of(origins, ("slurm", "sbatch", "ntasks_per_node")) or where,
            key="slurm.sbatch.ntasks_per_node",
            hint="set ntasks_per_node to ${slurm.gpus_per_node}",
        )
    if launch == "per_node" and tasks not in (None, 1):
        raise fail(
            f"launch per_node starts one task per node, but ntasks_per_node is {tasks}",
            origin_of(origins, ("slurm", "sbatch", "ntasks_per_node")) or where,
            key="slurm.sbatch.ntasks_per_node",
            hint="set ntasks_per_node to 1, or use launch per_gpu",
        )
    torchrun = config["backend"].get("torchrun") or {}
    if (
        launch == "per_node"
        and not _is_bash(config)
        and not (torchrun.get("nproc_per_node") or gpus)
    ):
        raise fail(
            "launch per_node starts torchrun, which needs the number of GPUs per node",
            origin_of(origins, ("slurm", "gpus_per_node")) or where,
            key="slurm.gpus_per_node",
            hint="set slurm.gpus_per_node (or backend.torchrun.nproc_per_node)",
        )
    return launch


def _launch(config: Mapping[str, Any], launch: str) -> list[Word]:
    slurm = config["slurm"]
    words: list[Word] = []
    if slurm.get("use_srun", True):
        words.append(Word("srun"))
        words.extend(_options(slurm.get("srun") or {}))
    if launch == "per_gpu":
        # `bash -c SHIM NAME ARGV...`: the shim sees ARGV as "$@", so config words stay words.
        words.extend(
            [Word("bash", new_line=bool(words)), Word("-c"), Word(RANK_SHIM), Word("oellm-task")]
        )
    for index, token in enumerate(slurm.get("launcher_cmd") or []):
        words.append(Word(token, new_line=index == 0 and bool(words)))
    container = config["container"]
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
    backend = config["backend"]
    first = bool(words)
    if backend["kind"] == "bash":
        words.extend([Word("bash", first), Word("-c"), Word("oellm_command", ref=True)])
    else:
        launcher = (
            _torchrun(config)
            if launch == "per_node"
            else list(map(Word, backend.get("launcher") or []))
        )
        # After torchrun's options the entrypoint starts a line of its own.
        entrypoint = Word(backend["entrypoint"], new_line=launch == "per_node")
        for index, word in enumerate([*launcher, entrypoint]):
            words.append(
                dataclasses.replace(word, new_line=word.new_line or (first and index == 0))
            )
        args = {**backend["megatron"], **wandb_args(config)}
        resume = bool(_resume_values(config))
        if resume:
            del args["load"]  # chosen when the job starts: see _resume_values
        argv = megatron_argv(args)
        for token in argv:
            words.append(Word(token, new_line=token.startswith("--")))
        if resume:
            words.extend([Word("--load", True), Word("oellm_load", ref=True)])
    # Layout: long launch lines break before options, so diffs of bundles stay readable.
    return [
        dataclasses.replace(w, separator="" if i == 0 else (" \\\n  " if w.new_line else " "))
        for i, w in enumerate(words)
    ]


def _resume_values(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A Megatron job that loads another job's checkpoint (a decay stage loading its stable
    sibling) must resume from its own once it has saved one, or every restart would start the
    stage over. The script picks `--load` when it starts: its own `save` folder once Megatron's
    `latest_checkpointed_iteration.txt` is there, the configured `load` until then."""
    backend = config["backend"]
    if backend["kind"] != "megatron":
        return []
    args = backend["megatron"]
    load, save = args.get("load"), args.get("save")
    if not load or not save or load == save:
        return []
    return [("oellm_save", str(save)), ("oellm_load_initial", str(load))]


def _options(options: Mapping[str, Any], dashes: bool = True) -> list[Word]:
    """`--key=value` words of a long-option map: true is a bare flag, false and null drop it.
    `dashes` spells `a_b` as `--a-b` (SLURM's spelling); torchrun options stay as written."""
    words: list[Word] = []
    for key, value in options.items():
        option = "--" + (key.replace("_", "-") if dashes else key)
        if value is None or value is False:
            continue
        words.append(Word(option if value is True else f"{option}={_scalar(value)}", True))
    return words


def _torchrun(config: Mapping[str, Any]) -> list[Word]:
    """torchrun, one per node: c10d rendezvous at MASTER_ADDR:MASTER_PORT, which the script
    derives. c10d assigns the node ranks, so no per-node value has to reach the argv (the
    batch shell runs on the first node only and cannot know the others' SLURM_NODEID)."""
    torchrun = config["backend"].get("torchrun") or {}
    nproc = torchrun.get("nproc_per_node") or config["slurm"].get("gpus_per_node")
    words = [Word(token) for token in torchrun.get("command") or ["torchrun"]]
    words += [
        Word("--nnodes", True),
        Word("oellm_nnodes", ref=True),
        Word("--nproc_per_node", True),
        Word(str(nproc)),
        Word("--rdzv_backend", True),
        Word("c10d"),
        Word("--rdzv_endpoint", True),
        Word("oellm_rdzv_endpoint", ref=True),
        Word("--rdzv_id", True),
        Word("oellm_rdzv_id", ref=True),
        Word("--max_restarts", True),
        Word(str(torchrun.get("max_restarts", 0))),
    ]
    words += _options(torchrun.get("options") or {}, dashes=False)
    return words
