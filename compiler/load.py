"""Load one YAML file into plain Python data plus the position of every key and item.

Positions are what make `file:line:col` error messages possible after composition has merged
many files; the data itself is plain dicts, lists and scalars from here on.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .errors import Origin, fail

Path_ = tuple[str | int, ...]
"""A path into a config tree: mapping keys and list indices."""

_PACKAGE_HEADER = re.compile(r"#\s*@package\s+(\S+)")


@dataclass(frozen=True)
class Loaded:
    """One file's data, where each part of it was written, and its `# @package` header."""

    data: Any
    origins: dict[Path_, Origin]
    package: str | None
    display: str


def load_text(text: str, display: str) -> Loaded:
    """Parse YAML text; `display` names the file in error messages."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        raw = yaml.load(text)
    except DuplicateKeyError as exc:
        raise _yaml_problem(exc, display, "duplicate key") from None
    except MarkedYAMLError as exc:
        raise _yaml_problem(exc, display, "invalid YAML") from None
    except YAMLError as exc:
        raise fail(f"invalid YAML: {exc}", Origin(display, 1, 1)) from None
    origins: dict[Path_, Origin] = {(): Origin(display, 1, 1)}
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
    return fail(f"{what}: {detail}" if detail else what, origin)


def _plain(node: Any, path: Path_, origins: dict[Path_, Origin], display: str) -> Any:
    """Turn ruamel's round-trip nodes into plain data, recording positions on the way."""
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            line, col = node.lc.key(key)
            origin = Origin(display, line + 1, col + 1)
            if not isinstance(key, str) or isinstance(key, TaggedScalar):
                if isinstance(key, (int, float)) and not isinstance(key, bool):
                    key = str(key)
                else:
                    raise fail(f"mapping keys must be strings, got {key!r}", origin)
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


def _scalar(node: Any, path: Path_, origins: dict[Path_, Origin], display: str) -> Any:
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, TaggedScalar):
        return str(node.value)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        if not math.isfinite(node):
            raise fail(
                "infinite or NaN numbers cannot be stored in a bundle",
                origins.get(path, Origin(display, 1, 1)),
                hint="quote the value to keep it as a string",
            )
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, (datetime.date, datetime.datetime)):
        # YAML reads 2026-01-01 as a date; a config value is a string to us.
        return node.isoformat()
    raise fail(
        f"unsupported YAML value of type {type(node).__name__}",
        origins.get(path, Origin(display, 1, 1)),
    )
