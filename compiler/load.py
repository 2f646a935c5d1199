"""Load one YAML file into plain Python data plus the position of every key and item.

Positions are what make `file:line:col` error messages possible after composition has merged
many files; the data itself is plain dicts, lists and scalars from here on.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .errors import Origin, fail
from .guard import INT_RANGE, MAX_DEPTH, GuardedComposer, Refused, decode, unencodable
from .tree import KeyPath

_PACKAGE_HEADER = re.compile(r"#\s*@package\s+(\S+)")


@dataclass(frozen=True)
class Loaded:
    """One file's data, where each part of it was written, and its `# @package` header."""

    data: Any
    origins: dict[KeyPath, Origin]
    package: str | None
    display: str


def load_file(path: Path, display: str) -> Loaded:
    """Read and parse one config file; `display` names it in error messages."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read config file: {exc.strerror}", Origin(display, 1, 1)) from None
    return load_text(decode(data, display), display)


def load_text(text: str, display: str) -> Loaded:
    """Parse YAML text; `display` names the file in error messages."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.max_depth = MAX_DEPTH
    yaml.Composer = GuardedComposer
    try:
        raw = yaml.load(text)
    except Refused as exc:
        raise fail(exc.message, Origin(display, exc.line, exc.col), hint=exc.hint) from None
    except DuplicateKeyError as exc:
        raise _yaml_problem(exc, display, "duplicate key") from None
    except MarkedYAMLError as exc:
        raise _yaml_problem(exc, display, "invalid YAML") from None
    except YAMLError as exc:
        raise fail(f"invalid YAML: {exc}", Origin(display, 1, 1)) from None
    except RecursionError:
        # A backstop: MAX_DEPTH keeps ruamel's recursive composer well inside the stack.
        raise fail("the YAML is nested too deeply", Origin(display, 1, 1)) from None
    origins: dict[KeyPath, Origin] = {(): Origin(display, 1, 1)}
    data = _plain(raw, (), origins, display)
    if data is None:
        data = {}
    return Loaded(data, origins, _package(text), display)


def _package(text: str) -> str | None:
    """The `# @package X` header: only in the leading comment block, as Hydra reads it."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return None
        match = _PACKAGE_HEADER.match(stripped)
        if match:
            return match.group(1)
    return None


def _yaml_problem(exc: MarkedYAMLError, display: str, what: str) -> Exception:
    mark = exc.problem_mark or exc.context_mark
    origin = Origin(display, mark.line + 1, mark.column + 1) if mark else Origin(display, 1, 1)
    detail = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    if "maximum depth" in detail:
        return fail(
            f"mappings and lists are nested more than {MAX_DEPTH} deep",
            origin,
            hint="flatten the structure; no config needs this depth",
        )
    return fail(f"{what}: {detail}" if detail else what, origin)


def _plain(node: Any, path: KeyPath, origins: dict[KeyPath, Origin], display: str) -> Any:
    """Turn ruamel's round-trip nodes into plain data, recording positions on the way.

    An alias becomes a copy of its anchor's value at each place it is used (the composer has
    bounded how many values that makes).
    """
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, (line, col) in _keys(node):
            origin = Origin(display, line + 1, col + 1)
            value = node[key]
            if not isinstance(key, str) or isinstance(key, TaggedScalar):
                if isinstance(key, (int, float)) and not isinstance(key, bool):
                    key = str(key)
                else:
                    raise fail(f"mapping keys must be strings, got {key!r}", origin)
            if unencodable(key):
                raise _surrogate(origin)
            origins[path + (key,)] = origin
            out[key] = _plain(value, (*path, key), origins, display)
        return out
    if isinstance(node, CommentedSeq):
        items: list[Any] = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            origins[path + (index,)] = Origin(display, line + 1, col + 1)
            items.append(_plain(value, (*path, index), origins, display))
        return items
    return _scalar(node, path, origins, display)


def _keys(node: CommentedMap) -> Iterator[tuple[Any, tuple[int, int]]]:
    """A mapping's keys with their positions. Keys from merge keys (`<<: *base`) come first,
    as OmegaConf orders them, and point at where the anchored mapping wrote them."""
    own = node.lc.data or {}
    for key in node:
        if key not in own:
            yield key, _merged_position(node, key)
    for key in node:
        if key in own:
            yield key, node.lc.key(key)


def _merged_position(node: CommentedMap, key: Any) -> tuple[int, int]:
    # Depth first in merge order: the first mapping that writes the key is the one that won.
    # A loop, not recursion: chains of merges can be long.
    pending = list(reversed(list(node.merge)))
    while pending:
        source = pending.pop()
        if key in (source.lc.data or {}):
            line, col = source.lc.key(key)
            return line, col
        if isinstance(source, CommentedMap):
            pending.extend(reversed(list(source.merge)))
    line, col = node.lc.line, node.lc.col
    return (line or 0, col or 0)


def _surrogate(origin: Origin) -> Exception:
    return fail(
        "the text holds a lone surrogate (an escape such as \\ud800), which UTF-8 cannot hold",
        origin,
        hint="write the character itself, or escape a whole pair (\\U0001F600)",
    )


def _scalar(node: Any, path: KeyPath, origins: dict[KeyPath, Origin], display: str) -> Any:
    if node is None or isinstance(node, bool):
        return node
    where = origins.get(path, Origin(display, 1, 1))
    if isinstance(node, TaggedScalar):
        node = str(node.value)
    if isinstance(node, int):
        if not INT_RANGE[0] <= node <= INT_RANGE[1]:
            raise fail(
                "the integer does not fit in 64 bits", where, hint="quote it to keep it as text"
            )
        return int(node)
    if isinstance(node, float):
        if not math.isfinite(node):
            raise fail(
                "infinite or NaN numbers cannot be stored in a bundle",
                where,
                hint="quote the value to keep it as a string",
            )
        return float(node)
    if isinstance(node, str):
        if unencodable(node):
            raise _surrogate(where)
        return str(node)
    if isinstance(node, (datetime.date, datetime.datetime)):
        # YAML reads 2026-01-01 as a date; a config value is a string to us.
        return node.isoformat()
    raise fail(f"unsupported YAML value of type {type(node).__name__}", where)
