"""Command-line overrides: `a.b=1`, `+a.b=1` (add), `++a.b=1` (add or set), `~a.b` (delete),
and `group=option` (choose a config group option, as `slurm=leonardo`).

Values follow Hydra's override grammar (compiler/grammar.py): `lr=1e-4` is a float,
`tags=[a,b]` a list, `x={a:1,b:2}` a dict, `x='a b'` text; what Hydra would refuse or read
another way (`x=1,2` is a sweep there, `#` is no comment) is refused with a hint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import Origin, fail
from .grammar import GrammarError, SweepError, parse_value
from .guard import MAX_DEPTH, unencodable

if TYPE_CHECKING:
    from .library import Library

COMMAND_LINE = "<command line>"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*")


@dataclass(frozen=True)
class Override:
    kind: Literal["set", "add", "force", "delete", "group"]
    key: str
    value: Any
    origin: Origin
    text: str
    # `~key=value` deletes only while the key holds that value (Hydra's rule).
    has_value: bool = False


def parse_overrides(texts: Sequence[str], library: Library) -> list[Override]:
    out: list[Override] = []
    col = 1
    for text in texts:
        out.append(_parse_one(text, Origin(COMMAND_LINE, 1, col), library))
        col += len(text) + 1
    return out


def _parse_one(text: str, origin: Origin, library: Library) -> Override:
    if unencodable(text):
        # Python keeps argv bytes that are not UTF-8 as lone surrogates; a script cannot hold them.
        raise fail(f"override {text!r} is not valid UTF-8", origin)
    if text.startswith("~"):
        key, eq, raw = text[1:].partition("=")
        _check_key(key, text, origin)
        if not eq:
            return Override("delete", key, None, origin, text)
        value = _value(key, raw, text, _shifted(origin, len(key) + 2))
        return Override("delete", key, value, origin, text, has_value=True)
    if "=" not in text:
        raise fail(
            f"override '{text}' has no '='",
            origin,
            hint="write key=value, +key=value to add a key, or ~key to delete one",
        )
    head, _, raw = text.partition("=")
    kind: Literal["set", "add", "force", "delete", "group"] = "set"
    value_origin = _shifted(origin, len(head) + 1)
    if head.startswith("++"):
        kind, head = "force", head[2:]
    elif head.startswith("+"):
        kind, head = "add", head[1:]
    _check_key(head, text, origin)
    value = _value(head, raw, text, value_origin)
    if "." not in head and kind in ("set", "add") and library.is_group(head):
        if not isinstance(value, str):
            raise fail(f"'{head}' is a config group: its value must be an option name", origin)
        return Override("group", head, value, origin, text)
    return Override(kind, head, value, origin, text)


def _check_key(key: str, text: str, origin: Origin) -> None:
    if not _KEY.fullmatch(key):
        raise fail(f"override '{text}': '{key}' is not a dotted key", origin)
    if key.count(".") >= MAX_DEPTH:
        raise fail(f"override key '{key[:40]}...' has more than {MAX_DEPTH} parts", origin)


def _shifted(origin: Origin, by: int) -> Origin:
    return Origin(origin.file, origin.line, origin.col + by)


def _value(key: str, raw: str, text: str, origin: Origin) -> Any:
    try:
        return parse_value(raw)
    except GrammarError as exc:
        hint = exc.hint
        if isinstance(exc, SweepError):
            hint = (
                f"write {key}='{raw.strip()}' for a string or {key}=[{raw.strip()}] for a list; "
                "oellm sweeps live in the `sweep:` section"
            )
        raise fail(
            f"override '{text}': {exc.message}", _shifted(origin, exc.pos), hint=hint
        ) from None
