"""Read the reconciler's own records strictly: each JSON file is checked field by field against
the dataclass it stores (types, `Literal` values, time stamps) before anything acts on it.

A record that does not check out is damage, not data: a string attempt number, a job id that
is a number, a phase no round writes. Acting on it would submit twice or lose a job, so the
caller reports the file and its job waits.

`encode` and `dump` write a record as `decode` reads it back. Reading one from its bytes,
quickly where msgspec is installed, is `codec_quick.loads`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, Union, get_args, get_origin

try:
    import msgspec
except ImportError:  # `dump` writes the same bytes through `json`, more slowly
    msgspec = None  # type: ignore[assignment]

T = TypeVar("T")


class RecordInvalid(ValueError):
    """A record whose JSON is well formed but whose content is not a valid record."""


def decode(kind: type[T], data: object, where: str = "") -> T:
    """`data` (parsed JSON) as a `kind` dataclass, or RecordInvalid saying which field is
    wrong. Unknown fields are refused too: they mean a record this oellm did not write."""
    if not isinstance(data, dict):
        raise RecordInvalid(f"{where or 'the record'} is not a JSON object")
    fields = _fields(kind)  # type: ignore[arg-type]  # a class is hashable
    if not fields.keys() >= data.keys():
        unknown = sorted(data.keys() - fields.keys())
        raise RecordInvalid(f"unknown field {_at(where, unknown[0])}")
    values: dict[str, Any] = dict(data)
    for name, value in data.items():
        field = fields[name]
        # A plain value of its exact type is taken as it is (most fields of most records);
        # anything else goes through the field's reader, which converts it or says why not.
        if type(value) not in field.plain:
            values[name] = field.read(value, field.where if not where else _at(where, name))
    if len(values) < len(fields):
        for name, field in fields.items():
            if field.required and name not in values:
                raise RecordInvalid(f"missing field {_at(where, name)}")
    return kind(**values)


def encode(record: Any) -> dict[str, Any]:
    """A record dataclass as the JSON object `decode` reads: `dataclasses.asdict` without its
    deep copy of every value (records are frozen; a round writes thousands of them)."""
    names = _fields(type(record))  # type: ignore[arg-type]  # a class is hashable
    return {name: _plain(getattr(record, name)) for name in names}


def dump(data: Any) -> bytes:
    """A record (its dataclass, or a mapping of JSON values) as its file holds it: keys sorted,
    indented by one space, a newline at the end, text as UTF-8; a dataclass as `encode` gives
    it. msgspec makes this about seven times quicker than `json.dumps`, whose indent runs in
    pure Python: a round that sees 10,000 array tasks start rewrites 10,000 records.

    A float that is not finite (a NaN loss a log event read) is written as `json.dumps`
    writes it (`NaN`, which the reader takes back): msgspec would write `null`."""
    if msgspec is not None and _finite(data):
        try:
            compact = msgspec.json.encode(data, order="sorted")
        except (TypeError, ValueError):  # text that UTF-8 cannot hold (a lone surrogate)
            pass
        else:
            return msgspec.json.format(compact, indent=1) + b"\n"
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = encode(data)
    try:
        return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


_SCALARS_OK = frozenset({str, int, bool, type(None)})


def _finite(value: Any) -> bool:
    """Whether every float in `value` (a record, or JSON values) is finite."""
    kind = type(value)
    if kind in _SCALARS_OK:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(_finite(item) for item in value.values())
    if kind is list or kind is tuple:
        return all(_finite(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_finite(getattr(value, name)) for name in _fields(kind))  # type: ignore[arg-type]
    return True  # anything else: the encoder says what it makes of it


def _plain(value: Any) -> Any:
    if type(value) is tuple:
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode(value)
    return value


Reader = Callable[[object, str], Any]


@dataclasses.dataclass(frozen=True)
class _Field:
    read: Reader
    required: bool
    where: str  # the field's name: where it is in a record read at the top level
    plain: frozenset[type[Any]]  # types a value may have to be taken without its reader


def is_stamp(name: str, hint: Any) -> bool:
    """Whether a field is a time stamp, which both readers check: text (or null) named `at`
    or `..._at`."""
    return hint in (str, str | None) and (name.endswith("_at") or name == "at")


@functools.cache
def _fields(kind: type[Any]) -> dict[str, _Field]:
    """A record type's fields, each with its reader, worked out once per process: resolving
    the string annotations costs more than checking a record (10,000 are read per round)."""
    hints = typing.get_type_hints(kind)
    fields = {}
    for field in dataclasses.fields(kind):
        hint = hints[field.name]
        read = _reader(hint)
        plain = _plain_types(hint)
        if is_stamp(field.name, hint):
            read, plain = _stamped(read), frozenset({type(None)}) & plain
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        fields[field.name] = _Field(read, required, field.name, plain)
    return fields


def _plain_types(hint: Any) -> frozenset[type[Any]]:
    """The types a value of `hint` may have to be kept as it is, unread: str, int, bool and
    None where the hint is one of them or a union of them (a float field converts an int, a
    Literal or a time stamp is checked: those always go through their reader)."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    kept = {option for option in options if option in (str, int, bool, type(None))}
    return frozenset(kept) if len(kept) == len(options) else frozenset()


def _stamped(read: Reader) -> Reader:
    def stamped(value: object, where: str) -> Any:
        found = read(value, where)
        if found is not None:
            _stamp(found, where)
        return found

    return stamped


@functools.cache
def _reader(hint: Any) -> Reader:
    """The function that checks and converts a value of type `hint`."""
    origin = get_origin(hint)
    if hint is Any:
        return lambda value, where: value
    if origin in (Union, types.UnionType):
        return _union(get_args(hint))
    if origin is typing.Literal:
        allowed = get_args(hint)

        def literal(value: object, where: str) -> Any:
            if value not in allowed:
                names = ", ".join(repr(a) for a in allowed)
                raise RecordInvalid(f"{where} is {value!r}, not one of {names}")
            return value

        return literal
    if origin is tuple:
        item = _reader(get_args(hint)[0])

        def sequence(value: object, where: str) -> Any:
            if not isinstance(value, list):
                raise RecordInvalid(f"{where} must be a list, not {_kind(value)}")
            return tuple(item(x, f"{where}[{i}]") for i, x in enumerate(value))

        return sequence
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        args = get_args(hint)
        inner = _reader(args[1]) if args else None

        def mapping(value: object, where: str) -> Any:
            if not isinstance(value, dict):
                raise RecordInvalid(f"{where} must be an object, not {_kind(value)}")
            if inner is None:
                return value
            return {str(k): inner(v, f"{where}.{k}") for k, v in value.items()}

        return mapping
    if dataclasses.is_dataclass(hint):
        return lambda value, where: decode(hint, value, where)  # type: ignore[arg-type]
    if hint in SCALARS:
        return _scalar(hint)
    raise RecordInvalid(f"no reader for {hint!r}")


def _union(options: tuple[Any, ...]) -> Reader:
    nullable = type(None) in options
    readers = [_reader(option) for option in options if option is not type(None)]

    def union(value: object, where: str) -> Any:
        if value is None and nullable:
            return None
        errors = []
        for read in readers:
            try:
                return read(value, where)
            except RecordInvalid as exc:
                errors.append(str(exc))
        raise RecordInvalid(errors[0] if errors else f"{where} must not be null")

    return union


def _scalar(hint: type[Any]) -> Reader:
    word = SCALARS[hint]

    def scalar(value: object, where: str) -> Any:
        # bool is an int to Python, not to a record; an int is a fine float.
        kind = type(value)
        if kind is hint or (hint is float and kind is int):
            return float(value) if hint is float else value  # type: ignore[arg-type]
        raise RecordInvalid(f"{where} must be {word}, not {_kind(value)}")

    return scalar


# The scalar types a record field may have, each with how a message names it; the quick
# reader decodes these as they are.
SCALARS: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _stamp(text: str, where: str) -> None:
    """Time stamps are compared with each other and with now: a bad one must be refused."""
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise RecordInvalid(f"{where} is {text!r}, not an ISO time stamp") from None
    if stamp.tzinfo is None:
        raise RecordInvalid(f"{where} is {text!r}, a time stamp without its time zone")


def good_stamp(text: str) -> bool:
    """Whether `_stamp` accepts `text`: the time stamp check for a reader that does not say
    why (the quick reader, which leaves a record it refuses to `decode`)."""
    try:
        _stamp(text, "")
    except RecordInvalid:
        return False
    return True


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
