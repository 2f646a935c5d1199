"""Validate a job's resolved config against `schemas/experiment.schema.json` (Draft 2020-12).

Every error is reported, each from jsonschema's structured fields (validator, path, schema),
never by parsing its message text, with the position of the offending key and a did-you-mean.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from .env_values import check_env_values
from .errors import ConfigError, Origin, Problem, did_you_mean
from .load import Path_
from .megatron import megatron_schema, suggest_argument
from .slurm_options import check_slurm_options
from .tree import origin_of

MISSING = "???"


def load_schema(name: str) -> dict[str, Any]:
    if name == "megatron.schema.json":
        return megatron_schema()  # the shipped one, or a fork's (megatron_source)
    text = importlib.resources.files("oellm.schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def experiment_validator() -> Draft202012Validator:
    registry: Registry[Any] = Registry()
    for name in ("experiment.schema.json", "megatron.schema.json"):
        registry = registry.with_resource(name, Resource.from_contents(load_schema(name)))
    return Draft202012Validator(load_schema("experiment.schema.json"), registry=registry)


class Validator:
    """Validates job configs: a fast yes/no first (jsonschema-rs, where installed), and the
    detailed walk with positions and hints only for a config that has a problem.
    """

    def __init__(self) -> None:
        self._fast = _fast_validator(("experiment.schema.json", "megatron.schema.json"))

    def __call__(self, config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> None:
        """Raise one ConfigError listing every problem, or return quietly."""
        problems = list(_missing_values(config, (), origins))
        if not problems and self._fast is not None and self._fast(config):
            problems.extend(_semantics(config, origins))
            if problems:
                raise ConfigError(problems)
            return
        if not problems:
            errors = experiment_validator().iter_errors(config)
            for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
                problems.extend(_problems(error, origins))
        if not problems:
            problems.extend(_semantics(config, origins))
        if problems:
            raise ConfigError(sorted(set(problems), key=_position))


def _semantics(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> Iterator[Problem]:
    """What a schema cannot say: option names sbatch and srun know, env values without shell
    syntax, regexes that compile, signals that reach a handler."""
    yield from check_slurm_options(config.get("slurm") or {}, origins)
    yield from check_env_values(config, origins)
    job = config.get("job") or {}
    for index, event in enumerate(job.get("log_events") or []):
        if event.get("kind") == "regex" and isinstance(event.get("pattern"), str):
            try:
                re.compile(event["pattern"])
            except re.error as exc:
                path: Path_ = ("job", "log_events", index, "pattern")
                yield Problem(
                    f"invalid regular expression: {exc}",
                    origin_of(origins, path),
                    key=_dotted(path),
                )
    sbatch_options = (config.get("slurm") or {}).get("sbatch") or {}
    overlap = {"NODE_FAIL", "PREEMPTED"} & set((job.get("restart") or {}).get("on") or ())
    if sbatch_options.get("requeue") is True and overlap:
        path = ("slurm", "sbatch", "requeue")
        yield Problem(
            f"SLURM requeues this job, and job.restart also restarts it on "
            f"{', '.join(sorted(overlap))}: the same failure would run twice",
            origin_of(origins, path),
            key=_dotted(path),
            hint="let one of them own restarts: drop requeue, or take those states out of "
            "job.restart.on",
        )
    backend = config.get("backend") or {}
    if backend.get("kind") != "megatron":
        return
    handler = (backend.get("megatron") or {}).get("exit_signal_handler")
    sbatch = (config.get("slurm") or {}).get("sbatch") or {}
    signal = sbatch.get("signal")
    if handler and not signal:
        path = ("backend", "megatron", "exit_signal_handler")
        yield Problem(
            "Megatron's exit signal handler never runs without a signal before the time limit",
            origin_of(origins, path),
            key=_dotted(path),
            hint="set slurm.sbatch.signal, e.g. 'TERM@300' (SIGTERM to the training, 300 s "
            "before the limit, time enough to save a checkpoint)",
        )
    if signal and not handler:
        path = ("slurm", "sbatch", "signal")
        yield Problem(
            f"signal {signal!r} would stop Megatron without saving a checkpoint",
            origin_of(origins, path),
            key=_dotted(path),
            hint="set backend.megatron.exit_signal_handler: true so training saves and exits",
        )


def _fast_validator(names: tuple[str, ...]) -> Callable[[Any], bool] | None:
    """A compiled Draft 2020-12 validator for the common case, or None without the package."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    resources = [(name, load_schema(name)) for name in names]
    registry = jsonschema_rs.Registry(resources)
    validator = jsonschema_rs.Draft202012Validator(resources[0][1], registry=registry)
    is_valid: Callable[[Any], bool] = validator.is_valid
    return is_valid


def validate(config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> None:
    """Validate one config (no memory across calls)."""
    Validator()(config, origins)


def _position(p: Problem) -> tuple[str, int, int, str]:
    o = p.origin
    return (o.file, o.line, o.col, p.message) if o else ("", 0, 0, p.message)


def _missing_values(value: Any, path: Path_, origins: Mapping[Path_, Origin]) -> Iterator[Problem]:
    # `???` marks a value the library cannot choose for the user (OmegaConf's mandatory value).
    if isinstance(value, str) and "\x00" in value:
        yield Problem(
            "a NUL character cannot be passed to a program or kept in a script",
            origin_of(origins, path),
            key=_dotted(path),
        )
    elif value == MISSING:
        yield Problem(
            "missing mandatory value",
            origin_of(origins, path),
            key=_dotted(path),
            hint=f"set it in the experiment or on the command line: {_dotted(path)}=...",
        )
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _missing_values(child, (*path, key), origins)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _missing_values(child, (*path, index), origins)


def _problems(
    error: ValidationError, origins: Mapping[Path_, Origin], prefix: Path_ = ()
) -> Iterator[Problem]:
    path: Path_ = prefix + tuple(error.absolute_path)
    key = _dotted(path) or "(top)"
    where = origin_of(origins, path)
    kind = error.validator
    schema: Any = error.schema
    instance: Any = error.instance
    expected: Any = error.validator_value
    if kind == "additionalProperties":
        known = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        for extra in sorted(instance):
            if extra in known or any(re.search(p, extra) for p in patterns):
                continue
            megatron = path == ("backend", "megatron")
            yield Problem(
                f"unknown {'argument' if megatron else 'key'} '{extra}'",
                origin_of(origins, (*path, extra)),
                key=key,
                hint=suggest_argument(extra) if megatron else did_you_mean(extra, known),
            )
    elif kind == "required":
        for name in expected:
            if isinstance(instance, dict) and name not in instance:
                yield Problem(f"missing required key '{name}'", where, key=key)
    elif kind == "type":
        wanted = expected
        names = " or ".join(wanted) if isinstance(wanted, list) else wanted
        yield Problem(f"expected {names}, got {_show(instance)}", where, key=key)
    elif kind in ("enum", "const"):
        allowed = expected if kind == "enum" else [expected]
        yield Problem(
            f"{_show(instance)} is not one of {', '.join(_show(a) for a in allowed)}",
            where,
            key=key,
            hint=did_you_mean(str(instance), [str(a) for a in allowed]),
        )
    elif kind == "pattern":
        yield Problem(
            f"{_show(instance)} does not match the pattern {expected}",
            where,
            key=key,
            hint=_pattern_hint(path),
        )
    elif kind == "propertyNames":
        yield Problem(f"invalid key name {_show(instance)}", where, key=key)
    elif kind in ("minimum", "exclusiveMinimum", "minLength", "minItems"):
        yield Problem(f"{_show(instance)} is too small ({kind} {expected})", where, key=key)
    elif error.context:
        # allOf / if-then and friends: report the most specific sub-errors.
        for sub in error.context:
            yield from _problems(sub, origins, prefix)
    else:
        yield Problem(f"invalid value {_show(instance)} ({kind})", where, key=key)


def _pattern_hint(path: Path_) -> str | None:
    if path == ("job", "name"):
        return "job names become file names: letters, digits, '_', '.', '+' and '-' only"
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


@functools.cache
def lock_validator() -> Draft202012Validator:
    registry: Registry[Any] = Registry()
    for name in ("experiment.schema.json", "megatron.schema.json", "lock.schema.json"):
        registry = registry.with_resource(name, Resource.from_contents(load_schema(name)))
    return Draft202012Validator(load_schema("lock.schema.json"), registry=registry)


@functools.cache
def _fast_lock() -> Callable[[Any], bool] | None:
    return _fast_validator(("lock.schema.json", "experiment.schema.json", "megatron.schema.json"))


def check_lock(lock: Mapping[str, Any]) -> None:
    """The compiler checks its own output against the lockfile contract; a failure is a bug."""
    fast = _fast_lock()
    if fast is not None and fast(lock):
        return
    errors = sorted(lock_validator().iter_errors(lock), key=lambda e: list(map(str, e.path)))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
        raise AssertionError(f"compiled lockfile breaks schemas/lock.schema.json: {details}")
