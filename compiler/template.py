"""The interpolation grammar (OmegaConf syntax): split a string into text, keys and
resolver calls. Parsing is cached, as the same strings repeat across thousands of jobs.

`\\${` is an escape. With `keep_escaped` (the sweep, before its per-job stage) it stays
escaped in the output; otherwise it stands for a literal `${`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .tree import split_key


@dataclass(frozen=True)
class Key:
    """`${a.b}`, `${.x}` or `${..x}`: `up` is the number of leading dots."""

    up: int
    parts: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Arg, ...]
    text: str


@dataclass(frozen=True)
class Arg:
    parts: tuple[Part, ...]
    quoted: bool


Part = str | Key | Call
Template = tuple[Part, ...]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(?=:)")

MAX_NESTING = 32
"""Interpolations inside interpolations, at most; parsing and resolving them recurse."""


class ParseError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def has_interpolation(text: str) -> bool:
    return "${" in text


@functools.lru_cache(maxsize=65536)
def parse(text: str, keep_escaped: bool = False) -> Template:
    """Split a string into text and interpolations; cached, as strings repeat across jobs."""
    parts, end = _parse_parts(text, 0, keep_escaped, stop="", depth=0)
    assert end == len(text)
    return parts


def _parse_parts(
    text: str, i: int, keep_escaped: bool, stop: str, depth: int
) -> tuple[Template, int]:
    parts: list[Part] = []
    buf: list[str] = []
    n = len(text)
    while i < n:
        if stop and text[i] in stop:
            break
        if text.startswith("\\\\${", i):
            buf.append("\\")
            i += 2
            continue
        if text.startswith("\\${", i):
            buf.append("\\${" if keep_escaped else "${")
            i += 3
            continue
        if text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            node, i = _parse_interp(text, i + 2, keep_escaped, depth + 1)
            parts.append(node)
            continue
        if stop and text[i] == "\\" and i + 1 < n:
            buf.append(text[i + 1])
            i += 2
            continue
        buf.append(text[i])
        i += 1
    if buf:
        parts.append("".join(buf))
    return tuple(parts), i


def _parse_interp(text: str, i: int, keep_escaped: bool, depth: int) -> tuple[Key | Call, int]:
    start = i - 2
    if depth > MAX_NESTING:
        raise ParseError(f"interpolations are nested more than {MAX_NESTING} deep")
    name = _NAME.match(text, i)
    if name:
        i = name.end() + 1
        args: list[Arg] = []
        while True:
            arg, i = _parse_arg(text, i, keep_escaped, depth)
            args.append(arg)
            if i >= len(text):
                raise ParseError(f"unclosed interpolation '{text[start:]}'")
            if text[i] == "}":
                i += 1
                break
            i += 1  # the comma
        if len(args) == 1 and not args[0].parts and not args[0].quoted:
            args = []
        return Call(name.group(0), tuple(args), text[start:i]), i
    end = text.find("}", i)
    if end < 0:
        raise ParseError(f"unclosed interpolation '{text[start:]}'")
    body = text[i:end].strip()
    if "${" in body or not body:
        raise ParseError(f"'{text[start : end + 1]}' is not a key or a resolver call")
    up = len(body) - len(body.lstrip("."))
    path = body[up:]
    segments = tuple(split_key(path)) if path else ()
    if any(not s for s in segments):
        raise ParseError(f"'{text[start : end + 1]}' is not a valid key")
    return Key(up, segments, text[start : end + 1]), end + 1


def _parse_arg(text: str, i: int, keep_escaped: bool, depth: int) -> tuple[Arg, int]:
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] in "'\"":
        quote = text[i]
        parts, j = _parse_quoted(text, i + 1, quote, keep_escaped, depth)
        j += 1
        while j < n and text[j] in " \t":
            j += 1
        if j >= n or text[j] not in ",}":
            raise ParseError(f"expected ',' or '}}' after a quoted argument in '{text}'")
        return Arg(parts, quoted=True), j
    parts, j = _parse_parts(text, i, keep_escaped, stop=",}", depth=depth)
    return Arg(_strip(parts), quoted=False), j


def _parse_quoted(
    text: str, i: int, quote: str, keep_escaped: bool, depth: int
) -> tuple[Template, int]:
    parts: list[Part] = []
    buf: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            if buf:
                parts.append("".join(buf))
            return tuple(parts), i
        if text.startswith("\\${", i):
            buf.append("\\${" if keep_escaped else "${")
            i += 3
            continue
        if text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            node, i = _parse_interp(text, i + 2, keep_escaped, depth + 1)
            parts.append(node)
            continue
        buf.append(ch)
        i += 1
    raise ParseError(f"unclosed quote in '{text}'")


def _strip(parts: Template) -> Template:
    items = list(parts)
    if items and isinstance(items[0], str):
        items[0] = items[0].lstrip()
    if items and isinstance(items[-1], str):
        items[-1] = items[-1].rstrip()
    return tuple(p for p in items if p != "")
