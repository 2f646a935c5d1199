"""How many points a sweep expands to, counted from its factors before anything is expanded.

Expanding a sweep of 100 x 100 x 100 x 100 values would take minutes and all the memory before
any limit could see its size; counting takes microseconds. Filters are not evaluated here, so
the count is an upper bound (a filter only removes points). Malformed parts count as one point:
`expand.py` reports them when it reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_KINDS = ("groups", "params", "configs")
_GROUP_WORDS = (*_KINDS, "type", "defaults", "filter")
_MAX_DESCRIPTION = 200


@dataclass(frozen=True)
class Size:
    """A point count and how it comes about: `100 lr x (3 configs + 2 wd)`."""

    points: int
    factors: str
    filtered: bool  # some part has a filter, so fewer points may survive

    def __str__(self) -> str:
        return self.factors


def sweep_size(sweep: object) -> Size:
    if not isinstance(sweep, Mapping) or not sweep:
        return Size(1, "1 point", False)
    if "grids" in sweep or all(key == "base_values" for key in sweep):
        grids = sweep.get("grids")
        parts = (
            [_params(g) for g in grids if isinstance(g, Mapping)] if isinstance(grids, list) else []
        )
        size = _sum(parts) if parts else Size(1, "1 point", False)
        return _with_filter(size, "filter" in sweep)
    return _group({k: v for k, v in sweep.items() if k != "base_values"})


def _group(node: object) -> Size:
    if not isinstance(node, Mapping):
        return Size(1, "1 point", False)
    kinds = [key for key in _KINDS if key in node]
    if not any(key in _GROUP_WORDS for key in node):
        return _params(node)  # the shorthand `- a.b: [1, 2]`
    if len(kinds) != 1:
        return Size(1, "1 point", "filter" in node)
    items = node[kinds[0]]
    if kinds[0] == "params":
        size = _params(items) if isinstance(items, Mapping) else Size(1, "1 point", False)
    elif not _is_list(items):
        size = Size(1, "1 point", False)
    elif kinds[0] == "configs":
        nested = [
            _group(item)
            for item in items
            if isinstance(item, Mapping) and any(key in _GROUP_WORDS for key in item)
        ]
        plain = len(items) - len(nested)
        own = [Size(plain, f"{plain} configs", False)] if plain else []
        size = _sum([*own, *nested])
    elif node.get("type", "product") == "list":
        size = _sum([_group(item) for item in items])
    else:
        size = _product([_group(item) for item in items])
    return _with_filter(size, "filter" in node)


def _params(node: Mapping[object, object]) -> Size:
    return _product(
        [
            Size(len(values), f"{len(values)} {key}", False)
            for key, values in node.items()
            if isinstance(values, list) and values
        ]
    )


def _product(parts: list[Size]) -> Size:
    if not parts:
        return Size(1, "1 point", False)
    points = 1
    for part in parts:
        points *= part.points
    factors = " x ".join(f"({p.factors})" if " + " in p.factors else p.factors for p in parts)
    return Size(points, _short(factors), any(p.filtered for p in parts))


def _sum(parts: list[Size]) -> Size:
    if not parts:
        return Size(1, "1 point", False)
    factors = " + ".join(p.factors for p in parts)
    return Size(sum(p.points for p in parts), _short(factors), any(p.filtered for p in parts))


def _with_filter(size: Size, filtered: bool) -> Size:
    return Size(size.points, size.factors, size.filtered or filtered)


def _is_list(node: object) -> bool:
    return isinstance(node, list) and bool(node)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."
