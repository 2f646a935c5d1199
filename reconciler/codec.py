"""Read the reconciler's own records strictly: each JSON file is checked field by field against
the dataclass it stores (types, `Literal` values, time stamps) before anything acts on it.

A record that does not check out is damage, not data: a string attempt number, a job id that
is a number, a phase no round writes. Acting on it would submit twice or lose a job, so the
caller reports the file and its job waits.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class RecordInvalid(ValueError):
    """A record whose JSON is well formed but whose content is not a valid record."""


def decode(kind: type[T], data: object, where: str = "") -> T:
    """`data` (parsed JSON) as a `kind` dataclass, or RecordInvalid saying which field is
    wrong. Unknown fields are refused too: they mean a record this oellm did not write."""
    if not isinstance(data, dict):
        raise RecordInvalid(f"{where or 'the record'} is not a JSON object")
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecordInvalid(f"unknown field {_at(where, unknown[0])}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise RecordInvalid(f"missing field {_at(where, name)}")
            continue
        values[name] = _value(hints[name], data[name], _at(where, name))
    return kind(**values)


def _value(hint: Any, value: object, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _value(option, value, where)
            except RecordInvalid as exc:
                errors.append(str(exc))
        raise RecordInvalid(errors[0] if errors else f"{where} must not be null")
    if origin is typing.Literal:
        if value not in get_args(hint):
            allowed = ", ".join(repr(a) for a in get_args(hint))
            raise RecordInvalid(f"{where} is {value!r}, not one of {allowed}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise RecordInvalid(f"{where} must be a list, not {_kind(value)}")
        (item, _) = get_args(hint)
        return tuple(_value(item, x, f"{where}[{i}]") for i, x in enumerate(value))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, dict):
            raise RecordInvalid(f"{where} must be an object, not {_kind(value)}")
        args = get_args(hint)
        if args:
            return {str(k): _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
        return value
    if dataclasses.is_dataclass(hint):
        return decode(hint, value, where)  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise RecordInvalid(f"{where} must be true or false, not {_kind(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise RecordInvalid(f"{where} must be an integer, not {_kind(value)}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RecordInvalid(f"{where} must be a number, not {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecordInvalid(f"{where} must be a string, not {_kind(value)}")
        if where.endswith(("_at", ".at")) or where == "at":
            _stamp(value, where)
        return value
    raise RecordInvalid(f"{where}: no reader for {hint!r}")


def _stamp(text: str, where: str) -> None:
    """Time stamps are compared with each other and with now: a bad one must be refused."""
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise RecordInvalid(f"{where} is {text!r}, not an ISO time stamp") from None
    if stamp.tzinfo is None:
        raise RecordInvalid(f"{where} is {text!r}, a time stamp without its time zone")


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
