"""Small operations on plain config trees that keep the origin map in step.

Merging follows OmegaConf: mappings merge key by key, everything else (lists included) is
replaced whole. An origin is kept for every key and list item, so errors can point at files.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from .errors import Origin

KeyPath = tuple[str | int, ...]
"""A path into a config tree: mapping keys and list indices."""


def dotted(path: KeyPath) -> str:
    """`('backend', 'megatron', 'lr')` -> `backend.megatron.lr`: the key an error names."""
    return ".".join(str(p) for p in path)


@functools.lru_cache(maxsize=4096)  # the same swept keys are split for every job
def key_path(text: str) -> KeyPath:
    """A dotted key as a path; digits are list indices (`a.0.b`)."""
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def split_key(path: str) -> list[str]:
    """The segments of an interpolation's key: `a.b[0].c` and `a.b.0.c` name the same thing."""
    return [s for s in re.split(r"\.|\[|\]", path.replace("].", "]")) if s != ""] or [""]


def merge(
    tree: dict[str, Any],
    origins: dict[KeyPath, Origin],
    data: dict[str, Any],
    data_origins: dict[KeyPath, Origin],
    prefix: tuple[str, ...] = (),
) -> None:
    """Merge `data` (one file's content, placed at `prefix`) into `tree` in place."""
    node: dict[str, Any] = tree
    for depth, key in enumerate(prefix):
        child = node.get(key)
        if not isinstance(child, dict):
            _forget(origins, prefix[: depth + 1])
            child = node[key] = {}
        node = child
    _merge_into(node, origins, data, data_origins, prefix, ())


def _merge_into(
    node: dict[str, Any],
    origins: dict[KeyPath, Origin],
    data: dict[str, Any],
    data_origins: dict[KeyPath, Origin],
    prefix: KeyPath,
    rel: KeyPath,
) -> None:
    for key, value in data.items():
        here = (*rel, key)
        origin = data_origins.get(here)
        existing = node.get(key)
        if isinstance(value, dict) and isinstance(existing, dict):
            if origin is not None:
                origins[prefix + here] = origin
            _merge_into(existing, origins, value, data_origins, prefix, here)
            continue
        if key in node:
            _forget(origins, (*prefix, *here))
        node[key] = _copy(value)
        for path, where in _origins_below(data_origins, here, value):
            origins[prefix + path] = where


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _origins_below(
    data_origins: dict[KeyPath, Origin], path: KeyPath, value: Any
) -> list[tuple[KeyPath, Origin]]:
    out: list[tuple[KeyPath, Origin]] = []
    origin = data_origins.get(path)
    if origin is not None:
        out.append((path, origin))
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_origins_below(data_origins, (*path, key), child))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(_origins_below(data_origins, (*path, index), child))
    return out


def _forget(origins: dict[KeyPath, Origin], path: KeyPath) -> None:
    """Drop the origins of a replaced subtree (rare, so a scan is fine)."""
    n = len(path)
    for stale in [p for p in origins if len(p) > n and p[:n] == path]:
        del origins[stale]


def get_path(tree: Any, path: KeyPath) -> tuple[bool, list[str]]:
    """Whether `path` exists, and the keys of its deepest existing parent (for did-you-mean)."""
    node = tree
    for key in path:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, str) and key.isdigit():
            if int(key) >= len(node):
                return False, []
            node = node[int(key)]
        else:
            return False, list(node) if isinstance(node, dict) else []
    return True, []


def set_path(
    tree: dict[str, Any],
    origins: dict[KeyPath, Origin],
    path: KeyPath,
    value: Any,
    origin: Origin | None,
) -> None:
    """Set a dotted path, creating mappings on the way; a list index may be a digit string."""
    node: Any = tree
    for depth, key in enumerate(path[:-1]):
        if isinstance(node, list) and isinstance(key, str) and key.isdigit():
            node = node[int(key)]
            continue
        child = node.get(key)
        if not isinstance(child, (dict, list)):
            child = node[key] = {}
            if origin is not None:
                origins[path[: depth + 1]] = origin
        node = child
    last = path[-1]
    _forget(origins, path)
    if isinstance(node, list) and isinstance(last, str) and last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    if origin is not None:
        origins[path] = origin


def delete_path(tree: dict[str, Any], origins: dict[KeyPath, Origin], path: KeyPath) -> None:
    node: Any = tree
    for key in path[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = path[-1]
    if isinstance(node, list):
        del node[int(last)]
    else:
        del node[last]
    _forget(origins, path)
    origins.pop(path, None)


def origin_of(origins: Mapping[KeyPath, Origin], path: KeyPath) -> Origin | None:
    """The origin of `path` or of its nearest ancestor that has one."""
    for n in range(len(path), -1, -1):
        found = origins.get(path[:n])
        if found is not None:
            return found
    return None


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """A copy of a config value with `fn` applied to every string in it."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    return value


def strings(value: Any) -> Iterator[str]:
    """Every string in a config value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)


T = TypeVar("T")
Memo = dict[int, tuple[Any, Any]]
_MEMO_SIZE = 64


def by_identity(memo: Memo, part: Any, make: Callable[[Any], T]) -> T:
    """`make(part)`, remembered in `memo` for this very object: the parts of a config are never
    changed, and thousands of jobs share most of them. The part is kept with its result, so
    that its id is not another's meanwhile; a memo keeps the last few parts."""
    found = memo.get(id(part))
    if found is not None and found[0] is part:
        result: T = found[1]
        return result
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    made = make(part)
    memo[id(part)] = (part, made)
    return made
