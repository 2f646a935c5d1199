"""One sweep point and how it is built: the record every later step reads, and how a point's
layers merge (a later layer overrides an earlier one; `list_composition` keys accumulate).
`expand.py` reads the sweep language into these layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from .errors import Origin

STAGE = "stage"
"""The key whose layer decides a point's `stage_keys`."""


@dataclass(frozen=True)
class SweepFilter:
    """A filter attached to points: a bool, or an interpolation string evaluated per job later."""

    expr: object
    origin: Origin | None


@dataclass(frozen=True)
class Point:
    """One sweep point; `values` and `origins` are read-only views in first-set key order."""

    index: int
    values: Mapping[str, object]
    origins: Mapping[str, Origin | None]
    stage_keys: frozenset[str]
    filters: tuple[SweepFilter, ...]


@dataclass(frozen=True)
class Layer:
    """Values written together in one place; later layers of a point override earlier ones.

    `together` is what a point's `stage_keys` becomes when its `stage` is taken from this layer.
    """

    values: Mapping[str, object]
    origins: Mapping[str, Origin | None]
    together: frozenset[str]


class Part(NamedTuple):
    """A point under construction: layers lowest precedence first, filters outermost first."""

    layers: tuple[Layer, ...]
    filters: tuple[SweepFilter, ...]


def point(index: int, part: Part, composed: frozenset[str] = frozenset()) -> Point:
    """Point `index` from its layers, lowest precedence first: a later layer's value wins, but
    the `composed` keys that several layers set gather into one flat list."""
    values: dict[str, object] = {}
    origins: dict[str, Origin | None] = {}
    stage_from: Layer | None = None
    gathered: dict[str, list[object]] = {}
    for layer in part.layers:
        for key in composed.intersection(layer.values):
            value = layer.values[key]
            gathered.setdefault(key, []).extend(value if isinstance(value, list) else [value])
        values.update(layer.values)
        origins.update(layer.origins)
        if STAGE in layer.values:
            stage_from = layer
    for key, items in gathered.items():
        # One layer alone keeps its value as written; several make one flat list.
        if sum(1 for layer in part.layers if key in layer.values) > 1:
            values[key] = items
    stage_keys = stage_from.together if stage_from is not None else frozenset()
    return Point(
        index, MappingProxyType(values), MappingProxyType(origins), stage_keys, part.filters
    )
