"""Every refusal of one job's config that the schema cannot express, in one place.

The pipeline runs `check_job` on each job after schema validation (`validate.py`) and before
its script is planned (`script.py`), so the planning and rendering code may assume a config
that passed. Two lists, in the order they run:

- `GATHERED`: findings reported together (every unknown option name at once, say);
- `IN_ORDER`: refusals of which the first one found is reported.

Checks across the jobs of a bundle run once every job is known: the job count
(`limits.check_bundle_limits`, and the sweep's size before expansion,
`limits.check_sweep_size`), checkpoints loaded with another schedule
(`megatron_checks.check_loads`), name collisions (`point_work`) and `moved:` (`pipeline`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from .backends import backend_of
from .env_values import check_env_values
from .errors import ConfigError, Origin, Problem
from .limits import limits_of, max_array_index
from .render import has_template
from .script import DIRECTIVE_UNSAFE, env_sources, launch_mode, sbatch_options, sbatch_safe
from .slurm_options import check_slurm_options
from .time_limits import check_time_limit
from .tree import KeyPath, dotted, origin_of
from .words import scalar

Check = Callable[[Mapping[str, Any], Mapping[KeyPath, Origin]], Iterator[Problem]]
Checks = tuple[tuple[Check, ...], tuple[Check, ...]]  # gathered, in order

ANY_MACHINE = "any"
# Where the default job.log_path comes from (as the library names its own files); one set
# anywhere else is the user's.
DEFAULT_JOB = "<oellm>/config/job/default.yaml"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}")


def check_job(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin], checks: Checks | None = None
) -> None:
    """Raise one ConfigError for the job's problems, or return quietly. `checks`: the
    gathered and in-order checks to run (`checks_for`); all of them by default."""
    gathered, in_order = (GATHERED, IN_ORDER) if checks is None else checks
    problems = [problem for check in gathered for problem in check(config, origins)]
    if problems:
        raise ConfigError(problems)
    for check in in_order:
        for problem in check(config, origins):
            raise ConfigError(problem)


def checks_for(model: Mapping[str, Any], changed: Collection[str]) -> Checks:
    """The checks a config can fail that is `model` (a config that passed every check) but
    for the values under the top-level keys `changed`: those that read one of these keys.
    A check reads the same keys of the same values each time, and what it does not read is
    the model's, unchanged (the parts of a config are shared, never changed)."""

    def needed(check: Check) -> bool:
        reading = _Reading(model)
        try:
            found = list(check(reading, {}))
        except Exception:
            return True
        return bool(found) or not reading.read.isdisjoint(changed)

    return tuple(filter(needed, GATHERED)), tuple(filter(needed, IN_ORDER))


class _Reading(Mapping[str, Any]):
    """A config's top level that records the keys read from it."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._config[key]

    def __iter__(self) -> Iterator[str]:
        self.read.update(self._config)  # a walk over the keys may read any of them
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)

    def __repr__(self) -> str:
        self.read.update(self._config)  # text of the whole config (json.dumps' default=str)
        return repr(self._config)

    def __reduce_ex__(self, protocol: object) -> Any:
        self.read.update(self._config)  # a copy or a pickle reads it all
        return dict, (self._config,)


def slurm_option_names(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """Option names sbatch and srun know (`slurm_options.py`)."""
    return check_slurm_options(config.get("slurm") or {}, origins)


def log_event_patterns(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """Regexes of log events compile."""
    job = config.get("job") or {}
    for index, event in enumerate(job.get("log_events") or []):
        if event.get("kind") == "regex" and isinstance(event.get("pattern"), str):
            try:
                re.compile(event["pattern"])
            except re.error as exc:
                path: KeyPath = ("job", "log_events", index, "pattern")
                yield Problem(
                    f"invalid regular expression: {exc}",
                    origin_of(origins, path),
                    key=dotted(path),
                )


def one_restart_owner(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """SLURM's requeue and oellm's restart policy must not both restart one failure."""
    job = config.get("job") or {}
    sbatch_options = (config.get("slurm") or {}).get("sbatch") or {}
    overlap = {"NODE_FAIL", "PREEMPTED"} & set((job.get("restart") or {}).get("on") or ())
    if sbatch_options.get("requeue") is True and overlap:
        path: KeyPath = ("slurm", "sbatch", "requeue")
        yield Problem(
            f"SLURM requeues this job, and job.restart also restarts it on "
            f"{', '.join(sorted(overlap))}: the same failure would run twice",
            origin_of(origins, path),
            key=dotted(path),
            hint="let one of them own restarts: drop requeue, or take those states out of "
            "job.restart.on",
        )


def backend_checks(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """What only the backend can judge (`backends/`)."""
    return backend_of(config).checks(config, origins)


def array_member(config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]) -> Iterator[Problem]:
    """What a task of an array (`slurm.array: true`) cannot be."""
    slurm = config["slurm"]
    if not slurm.get("array"):
        return
    job = config["job"]
    where = origin_of(origins, ("slurm", "array"))
    if int(job.get("chain_repeat", 1)) > 1:
        yield Problem(
            "slurm.array and job.chain_repeat cannot be combined: each link of a chain waits "
            "for the one before it, so links cannot share one array",
            origin_of(origins, ("job", "chain_repeat")) or where,
            key="job.chain_repeat",
            hint="set slurm.array false for chained jobs",
        )
    if job.get("dependency") == "slurm":
        yield Problem(
            "slurm.array and job.dependency: slurm cannot be combined: the tasks of one array "
            "would each wait for a different upstream job",
            origin_of(origins, ("job", "dependency")) or where,
            key="job.dependency",
            hint="leave job.dependency at its default (the reconciler gates each task)",
        )
    log_origin = origin_of(origins, ("job", "log_path"))
    if log_origin is not None and log_origin.file != DEFAULT_JOB:
        yield Problem(
            "slurm.array: every task of an array writes to the array's one log, so "
            "job.log_path cannot be set",
            log_origin,
            key="job.log_path",
            hint="remove job.log_path: array logs go to "
            "<project.output_dir>/arrays/<stage>/slurm-%A_%a.log, and each job's "
            "log_path_current (current_<index>.log) points at its own",
        )
    for number, event in enumerate(job.get("log_events") or []):
        for which, path in enumerate(event.get("paths") or []):
            if "%j" in str(path):
                yield Problem(
                    "slurm.array: %j in a log event path is the task's own job id, which only "
                    "the task knows; name an array task's files by %A_%a",
                    origin_of(origins, ("job", "log_events", number, "paths", which)) or where,
                    key=f"job.log_events.{number}.paths",
                    hint="write %A_%a (the array's job id and the task's index) instead of %j",
                )
    if "array" in slurm["sbatch"]:
        yield Problem(
            "slurm.array builds the --array option itself; slurm.sbatch.array cannot be set too",
            origin_of(origins, ("slurm", "sbatch", "array")) or where,
            key="slurm.sbatch.array",
            hint="remove slurm.sbatch.array; limit concurrent tasks with slurm.array_throttle",
        )


def launch_layout(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """The preset's task layout fits its launch mode."""
    slurm = config["slurm"]
    launch = launch_mode(config)
    tasks = slurm["sbatch"].get("ntasks_per_node", slurm["sbatch"].get("ntasks-per-node"))
    gpus = int(slurm.get("gpus_per_node") or 0)
    where = origin_of(origins, ("slurm", "launch"))
    if launch == "per_gpu" and not slurm.get("use_srun", True):
        yield Problem(
            "launch per_gpu needs srun: each rank is one srun task",
            origin_of(origins, ("slurm", "use_srun")),
            key="slurm.use_srun",
        )
    if launch == "per_gpu" and gpus and tasks is not None and tasks != gpus:
        yield Problem(
            f"launch per_gpu starts one task per GPU, but ntasks_per_node is {tasks} "
            f"and gpus_per_node is {gpus}",
            origin_of(origins, ("slurm", "sbatch", "ntasks_per_node")) or where,
            key="slurm.sbatch.ntasks_per_node",
            hint="set ntasks_per_node to ${slurm.gpus_per_node}",
        )
    if launch == "per_node" and tasks not in (None, 1):
        yield Problem(
            f"launch per_node starts one task per node, but ntasks_per_node is {tasks}",
            origin_of(origins, ("slurm", "sbatch", "ntasks_per_node")) or where,
            key="slurm.sbatch.ntasks_per_node",
            hint="set ntasks_per_node to 1, or use launch per_gpu",
        )
    torchrun = config["backend"].get("torchrun") or {}
    if backend_of(config).torchrun(launch) and not (torchrun.get("nproc_per_node") or gpus):
        yield Problem(
            "launch per_node starts torchrun, which needs the number of GPUs per node",
            origin_of(origins, ("slurm", "gpus_per_node")) or where,
            key="slurm.gpus_per_node",
            hint="set slurm.gpus_per_node (or backend.torchrun.nproc_per_node)",
        )


def array_spec(config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]) -> Iterator[Problem]:
    """An explicit `slurm.sbatch.array` must not name an index SLURM refuses."""
    spec = config["slurm"]["sbatch"].get("array")
    maximum = limits_of(config).get("max_array_size")
    if not isinstance(spec, (str, int)) or isinstance(spec, bool) or maximum is None:
        return
    highest = max_array_index(str(spec))
    if highest is not None and highest >= maximum:
        yield Problem(
            f"array index {highest} is not below the site's MaxArraySize ({maximum})",
            origin_of(origins, ("slurm", "sbatch", "array")),
            key="slurm.sbatch.array",
            hint="split the array, or check slurm.limits.max_array_size against "
            "`scontrol show config | grep MaxArraySize` on the cluster",
        )


def machine(config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]) -> Iterator[Problem]:
    """A container preset made for another machine than the cluster preset (LUMI's SLURM with
    Leonardo's image and binds) would fail only when the job starts, after its wait in the
    queue. Each preset names its machine; `container.machine: any` says the image runs
    anywhere (the generic `apptainer` and `none` presets do)."""
    cluster = config["slurm"].get("machine")
    made_for = config["container"].get("machine")
    if cluster is None or made_for is None or made_for in (ANY_MACHINE, cluster):
        return
    yield Problem(
        f"the container preset is made for {made_for}, the slurm preset for {cluster}",
        origin_of(origins, ("container", "machine")),
        key="container.machine",
        hint=f"choose container={cluster} (or a container preset made for {cluster}); if this "
        f"image and its binds do work on {cluster}, set container.machine: {ANY_MACHINE}",
    )


def signal_handled(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """A pre-timeout signal must reach a handler. Without `B:` SLURM signals every process of
    the job steps; when torchrun starts the ranks that includes torchrun, which has no handler
    for SIGUSR1/SIGUSR2: it dies at once, and srun then stops the ranks in the middle of
    saving."""
    signal = config["slurm"]["sbatch"].get("signal")
    if not signal or not backend_of(config).torchrun(launch_mode(config)):
        return
    text = str(signal).upper()
    if not text.startswith("B:") and text.split("@", 1)[0].removeprefix("SIG") in ("USR1", "USR2"):
        yield Problem(
            f"signal {signal!r} would also reach torchrun, which dies on it",
            origin_of(origins, ("slurm", "sbatch", "signal")),
            key="slurm.sbatch.signal",
            hint="under slurm.launch per_node use TERM (torchrun passes it on to the ranks) "
            "with backend.megatron.exit_signal: SIGTERM, or let Megatron stop by itself with "
            "exit_duration_in_mins",
        )


def directive_values(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    """sbatch reads `#SBATCH` lines itself, without a shell: no quoting can protect a value."""
    options: Iterable[tuple[str, Any, KeyPath]] = sbatch_options(config)
    if sbatch_safe(config["slurm"]["sbatch"]):
        # Only the job's name and output can be unsafe (they come first): the rest was checked
        # for every job that shares this slurm.sbatch.
        job = config["job"]
        options = (
            ("job-name", job["name"], ("job", "name")),
            ("output", job["log_path"], ("job", "log_path")),
        )
    for _, value, path in options:
        if value is None or isinstance(value, bool):
            continue
        text = scalar(value)
        if DIRECTIVE_UNSAFE.search(text):
            yield Problem(
                f"value {text!r} cannot be written on an #SBATCH line",
                origin_of(origins, path),
                key=dotted(path),
                hint="sbatch reads #SBATCH lines itself: no double quotes, backslashes or newlines",
            )


def env_names(config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]) -> Iterator[Problem]:
    for path, env, _ in env_sources(config):
        for name in env:
            if not _ENV_NAME.fullmatch(name):
                yield Problem(
                    f"'{name}' is not a valid environment variable name",
                    origin_of(origins, (*path, name)),
                    key=dotted(path),
                )


def template(config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]) -> Iterator[Problem]:
    name = config["slurm"]["template"]
    if not has_template(name):
        yield Problem(
            f"no template '{name}' in oellm's templates",
            origin_of(origins, ("slurm", "template")),
            key="slurm.template",
        )


def safe_name(config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]) -> Iterator[Problem]:
    """The job's name names its files in the bundle."""
    name = config["job"]["name"]
    if not SAFE_NAME.fullmatch(name):
        yield Problem(f"'{name}' is not a safe file name", origin_of(origins, ("job", "name")))


GATHERED: tuple[Check, ...] = (
    slurm_option_names,
    check_env_values,
    log_event_patterns,
    one_restart_owner,
    backend_checks,
)
IN_ORDER: tuple[Check, ...] = (
    check_time_limit,
    array_member,
    launch_layout,
    array_spec,
    machine,
    signal_handled,
    directive_values,
    env_names,
    template,
    safe_name,
)
