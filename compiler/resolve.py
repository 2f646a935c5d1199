"""Turn the composed base config and one sweep point into that job's resolved config.

The point's values are set into a copy of the base (copying only the mappings on their paths,
so thousands of jobs share the untouched rest), their escaped `\\${...}` become live, and the
whole tree is resolved against the job's own values.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Origin, fail
from .expand import Point
from .interpolate import Interpolator, check_expanded
from .siblings import Sibling
from .tree import KeyPath, key_path, map_strings


@dataclass(frozen=True)
class JobConfig:
    config: dict[str, Any]
    origins: Mapping[KeyPath, Origin]


def unescape(value: Any) -> Any:
    """Make a sweep value's escaped interpolations live for the per-job stage."""
    return map_strings(value, lambda text: text.replace("\\${", "${"))


def with_values(
    base: dict[str, Any], values: Mapping[str, Any], origins: Mapping[str, Origin | None]
) -> tuple[dict[str, Any], dict[KeyPath, Origin]]:
    """A copy of `base` with dotted keys set; only mappings along the set paths are copied."""
    tree = dict(base)
    where: dict[KeyPath, Origin] = {}
    for dotted, value in values.items():
        path = key_path(dotted)
        node: Any = tree
        for depth, key in enumerate(path[:-1]):
            child = node.get(key) if isinstance(node, dict) else None
            if isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list) and isinstance(path[depth + 1], int):
                child = list(child)
            else:
                child = {}
            if isinstance(node, dict):
                node[key] = child
            else:
                raise fail(
                    f"cannot set '{dotted}': '{'.'.join(map(str, path[:depth]))}' is not a mapping",
                    origins.get(dotted),
                    key=dotted,
                )
            node = child
        last = path[-1]
        in_list = isinstance(node, list) and isinstance(last, int) and last < len(node)
        if in_list or isinstance(node, dict):
            node[last] = unescape(value)
        else:
            raise fail(f"cannot set '{dotted}' here", origins.get(dotted), key=dotted)
        origin = origins.get(dotted)
        if origin is not None:
            where[path] = origin
    return tree, where


_FILTERS = "\0filters"  # a key no config can write, holding the point's filters while they resolve


def resolve_job(
    base: dict[str, Any],
    base_origins: dict[KeyPath, Origin],
    point: Point,
    env: Mapping[str, str],
    siblings: Mapping[str, Sibling] | None = None,
    static: Mapping[int, int] | None = None,
) -> JobConfig | None:
    """The job's resolved config, or None when one of the point's filters rejects it."""
    values = dict(point.values)
    values["index"] = point.index
    tree, point_origins = with_values(base, values, point.origins)
    tree.pop("sweep", None)
    if siblings:
        # A sibling's config is resolved already: its values are taken as they are.
        tree["sibling"] = {stage: s.view for stage, s in siblings.items()}
    origins = ChainMap(point_origins, base_origins)
    sizes = dict(static or {})
    # Parts that hold no interpolation are shared, not walked: the base's, and a sibling's
    # (its config is resolved already).
    shared = {**sizes, **{i: 0 for s in (siblings or {}).values() for i in s.ids}}
    resolver = Interpolator(tree, origins, env, static=shared)
    if point.filters:
        tree[_FILTERS] = [unescape(f.expr) for f in point.filters]
        for n, sweep_filter in enumerate(point.filters):
            where = (_FILTERS, n)
            if sweep_filter.origin is not None:
                point_origins[where] = sweep_filter.origin
            verdict = resolver.resolve(where)
            if not isinstance(verdict, bool):
                raise fail(
                    f"a filter must give true or false, got {verdict!r}",
                    sweep_filter.origin,
                    key="sweep.filter",
                    hint="write a comparison: \"\\${oc.eval:'\\${backend.megatron.lr} <= 1e-3'}\"",
                )
            if not verdict:
                return None
        del tree[_FILTERS]
    config = {key: resolver.resolve((key,)) for key in tree if key != "sibling"}
    # Sizes are known for the base's parts; a sibling's parts are counted here, once each.
    check_expanded(config, ChainMap(resolver.derived, point_origins, base_origins), sizes)
    return JobConfig(config, ChainMap(resolver.derived, point_origins, base_origins))
