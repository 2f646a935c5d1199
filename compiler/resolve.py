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

from .depends import Shared
from .errors import Origin, fail
from .interpolate import Interpolator
from .leaves import Leaves, Made, plan
from .siblings import Sibling
from .sweep_point import Point
from .tree import KeyPath, key_path, map_strings
from .value_sizes import check_expanded


@dataclass(frozen=True)
class JobConfig:
    config: dict[str, Any]
    origins: Mapping[KeyPath, Origin]
    # Made from a model config (`leaves.py`): the plan, and this config's values at its paths
    # (where alone it differs from the model).
    model: Made | None = None
    values: list[Any] | None = None


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
    resolved: ResolvedParts | None = None,
) -> JobConfig | None:
    """The job's resolved config, or None when one of the point's filters rejects it.

    With `resolved`, what does not depend on the point is resolved once for all its jobs."""
    values = dict(point.values)
    values["index"] = point.index
    fast = resolved is not None and not siblings and not point.filters
    if fast:
        assert resolved is not None
        made = resolved.from_model(values, point.origins, base_origins)
        if made is not None:
            return made
    tree, point_origins = with_values(base, values, point.origins)
    tree.pop("sweep", None)
    if siblings:
        # A sibling's config is resolved already: its values are taken as they are.
        tree["sibling"] = {stage: s.view for stage, s in siblings.items()}
    origins = ChainMap(point_origins, base_origins)
    sizes = resolved.sizes if resolved is not None else dict(static or {})
    # Parts that hold no interpolation are shared, not walked: the base's, and a sibling's
    # (its config is resolved already).
    ids = {i: 0 for s in (siblings or {}).values() for i in s.ids}
    shared = resolved.of(base, values) if resolved is not None else None
    known = ChainMap(ids, sizes) if ids else sizes
    resolver = Interpolator(tree, origins, env, static=known, shared=shared)
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
    learnt = shared.derived if shared is not None else {}
    job_origins = ChainMap(resolver.derived, learnt, point_origins, base_origins)
    # Sizes are known for the base's parts and the shared ones; a sibling's parts are counted
    # here, once each.
    check_expanded(config, job_origins, sizes, resolved.lasting if resolved else ())
    if fast:
        assert resolved is not None and shared is not None
        resolved.model(values, base, config, shared)
    return JobConfig(config, job_origins)


class ResolvedParts:
    """What jobs share: the base's parts without interpolation (`static`, with their sizes)
    and, per set of swept keys, the values that do not depend on them (`depends.Shared`).
    `sizes` and `lasting` grow as jobs are resolved; everything in them lives for the compile.
    """

    def __init__(self, static: Mapping[int, int]) -> None:
        self.sizes: dict[int, int] = dict(static)
        self.lasting: set[int] = set()
        self._by_keys: dict[frozenset[str], Shared] = {}
        # Per swept keys, in their order: how a job's config is made from the first one's
        # (None: by the resolver), and the paths of the keys.
        self._plans: dict[tuple[str, ...], tuple[Leaves | None, list[KeyPath]]] = {}

    def from_model(
        self,
        values: Mapping[str, Any],
        given: Mapping[str, Origin | None],
        base_origins: dict[KeyPath, Origin],
    ) -> JobConfig | None:
        """The job's config made from the model job's of its swept keys (`leaves.py`), or
        None when the resolver makes it."""
        leaves, paths = self._plans.get(tuple(values), (None, []))
        if leaves is None:
            return None
        point_origins: dict[KeyPath, Origin] = {}
        for dotted, path in zip(values, paths, strict=True):
            origin = given.get(dotted)
            if origin is not None:
                point_origins[path] = origin
        shared = self._by_keys[frozenset(values)]
        derived: dict[KeyPath, Origin] = {}
        made = leaves.config(values, (point_origins, base_origins), shared.derived, derived)
        if made is None:
            return None
        # As many values as the model's, which `check_expanded` counted (`leaves.plan`).
        job_origins = ChainMap(derived, shared.derived, point_origins, base_origins)
        return JobConfig(made[0], job_origins, leaves, made[1])

    def model(
        self,
        values: Mapping[str, Any],
        base: dict[str, Any],
        config: dict[str, Any],
        shared: Shared,
    ) -> None:
        """The first config resolved for these swept keys becomes the model of the next ones."""
        keys = tuple(values)
        if keys not in self._plans:
            made = plan(base, config, shared.dependent, list(keys))
            self._plans[keys] = (made, [key_path(k) for k in keys])

    def of(self, base: dict[str, Any], values: Mapping[str, Any]) -> Shared:
        keys = frozenset(values)
        found = self._by_keys.get(keys)
        if found is None:
            swept = [key_path(k) for k in keys]
            # Set per job besides the point's values: its siblings' view and its filters.
            found = Shared(base, [*swept, ("sibling",), (_FILTERS,)], self.lasting)
            self._by_keys[keys] = found
        return found
