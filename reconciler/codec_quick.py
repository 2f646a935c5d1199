"""Read a record from its bytes (`loads`) as `codec.decode` would, and quickly: the msgspec
mirror of each record dataclass, and what turns a decoded mirror into the record itself.

With msgspec installed, a typed decode into a mirror of the record's dataclass (unknown fields
refused) plus the one check it cannot do (time stamps) takes each record that checks out at a
tenth of the cost; anything it does not take goes through `decode`, which accepts or refuses it
and says why exactly as it would on its own. A round reads one record per job in flight, so
this is most of what reading them costs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Union, get_args, get_origin

from .codec import SCALARS, decode, good_stamp, is_stamp

try:
    import msgspec
except ImportError:  # `decode` alone reads every record, as strictly and more slowly
    msgspec = None  # type: ignore[assignment]

T = TypeVar("T")


def loads(kind: type[T], data: bytes) -> T:
    """A `kind` record from its JSON bytes: what `decode(kind, json.loads(data))` returns, or
    the error it raises (RecordInvalid, or ValueError for text that is not JSON)."""
    quick = _quick(kind)  # type: ignore[arg-type]  # a class is hashable
    if quick is not None:
        found = quick(data)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return decode(kind, json.loads(data))


Quick = Callable[[bytes], Any]  # a record, or None: let `decode` read it (and say what is wrong)
Build = Callable[[Any], Any]  # a mirror's decoded value as the record's value; None: wrong


class _Unmirrored(Exception):
    """A field type the quick reader does not mirror: `decode` reads that kind of record."""


@functools.cache
def _quick(kind: type[Any]) -> Quick | None:
    """A reader of `kind` records from their bytes that returns only what `decode` would (the
    same record), and None for anything else; None when msgspec is absent."""
    if msgspec is None:
        return None
    try:
        struct, build = _mirror(kind)
    except _Unmirrored:
        return None
    decoder = msgspec.json.Decoder(struct)
    # RecursionError: nested too deep for msgspec, which `decode` then says (or reads).
    failed = (msgspec.MsgspecError, RecursionError)

    def quick(data: bytes) -> Any:
        try:
            found = decoder.decode(data)
        except failed:
            return None
        return build(found)

    return quick


def _mirror(kind: type[Any]) -> tuple[type[Any], Build]:
    """A msgspec Struct with `kind`'s fields, types and defaults that refuses unknown fields,
    and the function that makes a decoded one the `kind` record `decode` would have made."""
    hints = typing.get_type_hints(kind)
    fields: list[tuple[Any, ...]] = []
    stamps: list[str] = []
    nested: list[tuple[int, Build]] = []
    for number, field in enumerate(dataclasses.fields(kind)):
        hint = hints[field.name]
        shape, inner = _shape(hint)
        if is_stamp(field.name, hint):
            stamps.append(field.name)
        if inner is not None:
            nested.append((number, inner))
        if field.default is not dataclasses.MISSING:
            fields.append((field.name, shape, field.default))
        elif field.default_factory is not dataclasses.MISSING:
            fields.append((field.name, shape, msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((field.name, shape))
    struct = msgspec.defstruct(f"{kind.__name__}Mirror", fields, forbid_unknown_fields=True)
    values_of = msgspec.structs.astuple
    stamps_of = _getter(stamps)
    names = [field.name for field in dataclasses.fields(kind)]
    # The record is made without its constructor, its values set as the constructor would set
    # them: a frozen dataclass's __init__ sets each field through object.__setattr__, which
    # costs twice the decode. Its __post_init__ (Attempt's makes lists tuples and link dicts
    # Links) has nothing to do: msgspec makes tuples, and `nested` made the links. Where the
    # fields are slots, not a __dict__, the constructor makes it.
    direct = "__slots__" not in vars(kind)

    def build(found: Any) -> Any:
        for stamp in stamps_of(found):
            if stamp is not None and not good_stamp(stamp):
                return None
        values: Sequence[Any] = values_of(found)
        if nested:
            values = list(values)
            for number, inner in nested:
                if values[number]:  # an empty tuple is what it is
                    value = inner(values[number])
                    if value is None:
                        return None
                    values[number] = value
        if not direct:
            return kind(*values)
        made = object.__new__(kind)
        vars(made).update(zip(names, values, strict=True))
        return made

    return struct, build


def _shape(hint: Any) -> tuple[Any, Build | None]:
    """The msgspec type that decodes exactly the values `codec._reader(hint)` takes as they are, and
    the function that makes them what the reader would return (None: nothing to make)."""
    origin = get_origin(hint)
    if hint in SCALARS or hint is Any or hint is type(None) or origin is typing.Literal:
        return hint, None
    if origin in (Union, types.UnionType):
        options = [_shape(option) for option in get_args(hint)]
        if any(build is not None for _, build in options):
            raise _Unmirrored(hint)
        return Union[tuple(shape for shape, _ in options)], None  # noqa: UP007
    if origin is tuple:
        args = get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise _Unmirrored(hint)
        shape, inner = _shape(args[0])
        if inner is None:
            return tuple[shape, ...], None  # type: ignore[valid-type]
        made_by = inner

        def items(found: Any) -> Any:
            made = tuple(made_by(item) for item in found)
            return None if any(item is None for item in made) else made

        return tuple[shape, ...], items  # type: ignore[valid-type]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        args = get_args(hint)
        if not args:
            return dict[str, Any], None
        shape, inner = _shape(args[1])
        if args[0] is not str or inner is not None:
            raise _Unmirrored(hint)
        return dict[str, shape], None  # type: ignore[valid-type]
    if dataclasses.is_dataclass(hint):
        return _mirror(hint)  # type: ignore[arg-type]
    raise _Unmirrored(hint)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of the attributes `names` of an object, as a tuple."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        name = names[0]
        return lambda found: (getattr(found, name),)
    return operator.attrgetter(*names)
