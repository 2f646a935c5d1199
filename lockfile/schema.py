"""The one schema check of `plan.lock.json`, for both halves: the compiler's writer checks
what it seals (job by job), the reader what it loads. jsonschema-rs, where installed, says
whether data is valid; the pure-Python validator says where and how it is not.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

# The schema files a lockfile is checked against (the lockfile's refers to the others); the
# reader's digest of what judged lockfile bytes reads them too.
SCHEMAS = ("lock.schema.json", "experiment.schema.json", "megatron.schema.json")


@functools.cache
def _schemas() -> dict[str, Any]:
    folder = importlib.resources.files("oellm.schemas")
    return {name: json.loads(folder.joinpath(name).read_text(encoding="utf-8")) for name in SCHEMAS}


# What is checked: the whole lockfile, or one job of it (its schema within the lockfile's).
Part = Literal["lock", "job"]
_PART_SCHEMA: dict[str, dict[str, Any]] = {
    "lock": {"$ref": "lock.schema.json"},
    "job": {"$ref": "lock.schema.json#/properties/jobs/items"},
}


def validator() -> Draft202012Validator:
    """The detailed validator of lockfile data: run only to explain a failure."""
    return _validator("lock")


@functools.cache
def _validator(part: Part) -> Draft202012Validator:
    # Imported here: a round with a valid lockfile and jsonschema-rs never needs the
    # pure-Python validator, and importing it costs a round about 0.1 s.
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry()
    for name, schema in _schemas().items():
        registry = registry.with_resource(name, Resource.from_contents(schema))
    return Draft202012Validator(_PART_SCHEMA[part], registry=registry)


@functools.cache
def _fast_is_valid(part: Part) -> Callable[[Any], bool] | None:
    """A compiled validator for the common case (a valid lockfile of 10,000 jobs is checked in
    milliseconds), or None without jsonschema-rs."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    registry = jsonschema_rs.Registry(list(_schemas().items()))
    is_valid: Callable[[Any], bool] = jsonschema_rs.Draft202012Validator(
        _PART_SCHEMA[part], registry=registry
    ).is_valid
    return is_valid


def schema_error(data: Any, part: Part = "lock") -> tuple[str, str] | None:
    """Where lockfile data (or one job's) first breaks the schema, as a JSON path ('' for
    the top), and how; None when it is valid."""
    fast = _fast_is_valid(part)
    if fast is not None and fast(data):
        return None
    errors = sorted(_validator(part).iter_errors(data), key=lambda e: list(map(str, e.path)))
    if not errors:
        return None
    return "/".join(map(str, errors[0].path)), errors[0].message


__all__ = ["SCHEMAS", "Part", "schema_error", "validator"]
