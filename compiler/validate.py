"""Validate a job's resolved config against `schemas/experiment.schema.json` (Draft 2020-12).

Every error is reported, each from jsonschema's structured fields (validator, path, schema),
never by parsing its message text, with the position of the offending key and a did-you-mean.
What a schema cannot say is checked next, in `checks.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .backends.megatron import megatron_schema, suggest_argument
from .errors import ConfigError, Origin, Problem, did_you_mean
from .schema_paths import Location, Unsupported, leaf_schemas
from .tree import KeyPath, dotted, origin_of

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

    from .leaves import Made

MISSING = "???"


def load_schema(name: str) -> dict[str, Any]:
    if name == "megatron.schema.json":
        return megatron_schema()  # the shipped one, or a fork's (megatron_source)
    text = importlib.resources.files("oellm.schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def experiment_validator() -> Draft202012Validator:
    # Imported here: only a config with a problem needs the detailed validator, and importing
    # it costs every compile about 0.06 s.
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry()
    for name in ("experiment.schema.json", "megatron.schema.json"):
        registry = registry.with_resource(name, Resource.from_contents(load_schema(name)))
    return Draft202012Validator(load_schema("experiment.schema.json"), registry=registry)


class Validator:
    """Validates job configs: a fast yes/no first (jsonschema-rs, where installed), and the
    detailed walk with positions and hints only for a config that has a problem.
    """

    def __init__(self, shared: Container[int] = ()) -> None:
        """`shared`: ids of containers that stay alive and unchanged while this validator is
        used (see `value_sizes.static_parts`); they are walked once, not once per job."""
        self._compiled = _Compiled.load(SCHEMAS)
        self._fast = None if self._compiled is None else self._compiled.is_valid
        self._shared = shared
        self._clean: set[int] = set()
        # Per model config: a check per changed path (None: nothing judges it there), or None
        # when its configs are validated whole.
        self._leaves: dict[Made, list[Callable[[Any], bool] | None] | None] = {}

    def _suspect(self, config: Mapping[str, Any]) -> bool:
        """Whether the config holds a `???` or a NUL character: a quick scan without paths
        (the positions are found only for a config that has one). Shared parts found clean
        are not scanned again."""
        shared: list[int] = []
        pending: list[Any] = [config]
        while pending:
            value = pending.pop()
            if isinstance(value, str):
                if value == MISSING or "\x00" in value:
                    return True
            elif isinstance(value, (dict, list)):
                key = id(value)
                if key in self._clean:
                    continue
                if key in self._shared:
                    shared.append(key)
                pending.extend(value.values() if isinstance(value, dict) else value)
        self._clean.update(shared)
        return False

    def __call__(
        self,
        config: Mapping[str, Any],
        origins: Mapping[KeyPath, Origin],
        changed: Sequence[Any] | None = None,
        made: Made | None = None,
    ) -> None:
        """Raise one ConfigError listing every problem, or return quietly. `changed`: the
        config is one that passed but for these values (texts and numbers); `made`: it is
        the config made from this model with `changed` at the model's paths."""
        if changed is not None:
            suspect = any(
                type(value) is str and (value == MISSING or "\x00" in value) for value in changed
            )
        else:
            suspect = self._suspect(config)
        problems = list(_missing_values(config, (), origins)) if suspect else []
        if (
            not problems
            and made is not None
            and changed is not None
            and self._passes(made, changed)
        ):
            return
        if not problems and self._fast is not None and self._fast(config):
            return
        if not problems:
            errors = experiment_validator().iter_errors(config)
            for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
                problems.extend(_problems(error, origins))
        if problems:
            raise ConfigError(sorted(set(problems), key=_position))

    def _passes(self, made: Made, changed: Sequence[Any]) -> bool:
        """Whether a config made from `made` with the values `changed` passes the schema,
        judged by those values alone; False when that cannot tell (it is then validated
        whole, which also finds its problems)."""
        if made in self._leaves:
            leaves = self._leaves[made]
        else:
            leaves = self._leaves[made] = self._leaf_checks(made)
        if leaves is None or len(leaves) != len(changed):
            return False
        for check, value in zip(leaves, changed, strict=True):
            if check is not None and not check(value):
                return False
        return True

    def _leaf_checks(self, made: Made) -> list[Callable[[Any], bool] | None] | None:
        compiled = self._compiled
        if compiled is None or not compiled.is_valid(made.model):
            return None
        paths = made.paths
        checks: list[Callable[[Any], bool] | None] = []
        try:
            for path in paths:
                found = leaf_schemas(
                    compiled.resources, SCHEMAS[0], made.model, path, paths, compiled.accepts
                )
                checks.append(compiled.checker(found) if found else None)
        except Unsupported:
            return None
        return checks


SCHEMAS = ("experiment.schema.json", "megatron.schema.json")


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """The schemas compiled by jsonschema-rs (where installed): the whole config's check, and
    checks of the subschemas at given locations."""

    resources: dict[str, Any]
    registry: Any
    is_valid: Callable[[Any], bool]

    @classmethod
    def load(cls, names: tuple[str, ...]) -> _Compiled | None:
        try:
            import jsonschema_rs
        except ImportError:
            return None
        resources = {name: load_schema(name) for name in names}
        registry = jsonschema_rs.Registry(list(resources.items()))
        validator = jsonschema_rs.Draft202012Validator(resources[names[0]], registry=registry)
        return cls(resources, registry, validator.is_valid)

    def checker(self, locations: Sequence[Location]) -> Callable[[Any], bool]:
        """A check of a value against every subschema at `locations`."""
        import jsonschema_rs

        refs = [{"$ref": f"{name}#{quote(pointer)}"} for name, pointer in locations]
        schema = refs[0] if len(refs) == 1 else {"allOf": refs}
        validator = jsonschema_rs.Draft202012Validator(schema, registry=self.registry)
        is_valid: Callable[[Any], bool] = validator.is_valid
        return is_valid

    def accepts(self, location: Location, value: Any) -> bool:
        return self.checker([location])(value)


def validate(config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]) -> None:
    """Validate one config (no memory across calls)."""
    Validator()(config, origins)


def _position(p: Problem) -> tuple[str, int, int, str]:
    o = p.origin
    return (o.file, o.line, o.col, p.message) if o else ("", 0, 0, p.message)


def _missing_values(
    value: Any, path: KeyPath, origins: Mapping[KeyPath, Origin]
) -> Iterator[Problem]:
    # `???` marks a value the library cannot choose for the user (OmegaConf's mandatory value).
    if isinstance(value, str) and "\x00" in value:
        yield Problem(
            "a NUL character cannot be passed to a program or kept in a script",
            origin_of(origins, path),
            key=dotted(path),
        )
    elif value == MISSING:
        yield Problem(
            "missing mandatory value",
            origin_of(origins, path),
            key=dotted(path),
            hint=f"set it in the experiment or on the command line: {dotted(path)}=...",
        )
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _missing_values(child, (*path, key), origins)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _missing_values(child, (*path, index), origins)


def _problems(
    error: ValidationError, origins: Mapping[KeyPath, Origin], prefix: KeyPath = ()
) -> Iterator[Problem]:
    path: KeyPath = prefix + tuple(error.absolute_path)
    key = dotted(path) or "(top)"
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


def _pattern_hint(path: KeyPath) -> str | None:
    if path == ("job", "name"):
        return "job names become file names: letters, digits, '_', '.', '+' and '-' only"
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
