"""Command-line overrides: `a.b=1`, `+a.b=1` (add), `++a.b=1` (add or set), `~a.b` (delete),
and `group=option` (choose a config group option, as `slurm=leonardo`).

Values are read as YAML flow scalars, so `lr=1e-4` is a float and `tags=[a,b]` a list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError, Origin, fail
from .guard import MAX_DEPTH, unencodable
from .load import load_text

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
        key, _, _ = text[1:].partition("=")
        _check_key(key, text, origin)
        return Override("delete", key, None, origin, text)
    if "=" not in text:
        raise fail(
            f"override '{text}' has no '='",
            origin,
            hint="write key=value, +key=value to add a key, or ~key to delete one",
        )
    head, _, raw = text.partition("=")
    kind: Literal["set", "add", "force", "delete", "group"] = "set"
    if head.startswith("++"):
        kind, head = "force", head[2:]
    elif head.startswith("+"):
        kind, head = "add", head[1:]
    _check_key(head, text, origin)
    value = _value(raw, text, origin)
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


def _value(raw: str, text: str, origin: Origin) -> Any:
    if raw == "":
        return ""
    try:
        loaded = load_text(f"v: {raw}\n", COMMAND_LINE)
    except ConfigError:
        # Not YAML (e.g. an unbalanced bracket): keep the text as it was typed.
        return raw
    return loaded.data.get("v")
