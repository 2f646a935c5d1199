"""Expand the `sweep` section into the ordered list of sweep points.

Owns the sweep language (grid format: `base_values` + `grids`; groups format: `type`, `groups`,
`params`, `configs`, `defaults`, `filter`) and nothing after it: values are carried verbatim,
filters are attached to points but not evaluated, and siblings are matched by a later step.
Each place that writes values becomes one layer; `sweep_point.py` merges a point's layers.

Precedence inside a point, lowest first: `base_values`, then every enclosing group's `defaults`
(outer to inner), then the values of the group's own `params` combination or `configs` entry.
In a `product` of child groups each child's whole contribution (its defaults and its values)
overrides the children before it, so on a clash the later child wins. The top of the groups
format is itself a group, so `sweep.defaults` sits just above `base_values` for every point.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from types import MappingProxyType

from .errors import ConfigError, Origin, did_you_mean, fail
from .guard import MAX_DEPTH
from .sweep_point import STAGE, Layer, Part, Point, SweepFilter, point
from .tree import KeyPath

"""A path below the `sweep` mapping: mapping keys and list indices."""

Where = Callable[[KeyPath], Origin | None]
"""Where a node below `sweep` was written, or None when nobody knows."""

_KINDS = ("groups", "params", "configs")
_GROUP_WORDS = ("type", *_KINDS, "defaults", "filter")
_GRID_WORDS = ("base_values", "grids")
_TYPES = ("product", "list")


def expand(sweep: Mapping[str, object] | None, where: Where) -> list[Point]:
    """All points of `sweep` in expansion order; indices are 0..n-1 before any filtering."""
    if sweep is None or (isinstance(sweep, Mapping) and not sweep):
        return [Point(0, MappingProxyType({}), MappingProxyType({}), frozenset(), ())]
    if not isinstance(sweep, Mapping):
        raise fail("sweep must be a mapping", where(()), "sweep")
    base = _base_values(sweep, where)
    composed = _list_composition(sweep, where)
    sweep = {key: value for key, value in sweep.items() if key != _COMPOSITION}
    grid_format = "grids" in sweep or all(key == "base_values" for key in sweep)
    parts = _grid_format(sweep, where) if grid_format else _top_group(sweep, where)
    if base is not None:
        parts = [Part((base, *part.layers), part.filters) for part in parts]
    return [point(index, part, composed) for index, part in enumerate(parts)]


def _list_composition(sweep: Mapping[str, object], where: Where) -> frozenset[str]:
    """`list_composition: [key, ...]`: keys whose values accumulate into one list when several
    layers of a point set them (a product of groups, or a group's defaults and its values),
    instead of the later one winning; e.g. config group selections to compose."""
    if _COMPOSITION not in sweep:
        return frozenset()
    keys = _list(sweep[_COMPOSITION], (_COMPOSITION,), where, _COMPOSITION)
    for number, key in enumerate(keys):
        if not isinstance(key, str) or not key:
            raise fail(
                f"{_COMPOSITION} lists keys, not {_kind(key)}",
                where((_COMPOSITION, number)),
                _COMPOSITION,
            )
    return frozenset(str(key) for key in keys)


def _base_values(sweep: Mapping[str, object], where: Where) -> Layer | None:
    if "base_values" not in sweep:
        return None
    node = _mapping(sweep["base_values"], ("base_values",), where, "base_values")
    values, origins = _values(node, ("base_values",), where)
    # A stage in base_values is shared by every point, so nothing else is tied to it.
    return Layer(values, origins, frozenset({STAGE})) if values else None


def _grid_format(sweep: Mapping[str, object], where: Where) -> list[Part]:
    mixed = [key for key in sweep if key in _GROUP_WORDS and key != "filter"]
    if mixed:
        raise fail(
            f"sweep mixes the grid format ('grids') with the groups format ({_names(mixed)})",
            where(()),
            "sweep",
            hint="use either base_values + grids, or groups with type/defaults/params/configs",
        )
    for key in sweep:
        if key not in (*_GRID_WORDS, "filter"):
            raise _unknown_key(key, (), where, (*_GRID_WORDS, "filter"), "the sweep")
    filters = (_filter(sweep, (), where),) if "filter" in sweep else ()
    if "grids" not in sweep:
        return [Part((), filters)]
    grids = _list(sweep["grids"], ("grids",), where, "grids")
    parts: list[Part] = []
    for number, grid in enumerate(grids):
        path: KeyPath = ("grids", number)
        node = _mapping(grid, path, where, "a grid")
        if not node:
            raise fail("a grid needs at least one swept key", where(path), _key(path))
        parts.extend(Part(layers, filters) for layers in _params(node, path, where))
    return parts


_COMPOSITION = "list_composition"


def _top_group(sweep: Mapping[str, object], where: Where) -> list[Part]:
    # The top of the groups format is a group itself, plus base_values (handled by the caller).
    node = {key: value for key, value in sweep.items() if key != "base_values"}
    return _group(node, (), where, "the sweep", extra_words=_GRID_WORDS)


def _group(
    node: object,
    path: KeyPath,
    where: Where,
    what: str,
    extra_words: tuple[str, ...] = (),
) -> list[Part]:
    """Expand one group item: a mapping with exactly one of groups/params/configs."""
    group = _mapping(node, path, where, what)
    if not group:
        raise fail(
            f"{what} is empty",
            where(path),
            _key(path),
            hint="a group needs one of 'groups', 'params' or 'configs'",
        )
    choices = (*_GROUP_WORDS, *extra_words)
    unknown = [key for key in group if key not in _GROUP_WORDS and not _is_dotted(key)]
    typos = [key for key in unknown if did_you_mean(str(key), choices)]
    if typos:
        # Checked first so that `parms:` or `grid:` is never read as a swept key `parms`.
        raise _unknown_key(typos[0], path, where, choices, what)
    if not any(key in _GROUP_WORDS for key in group):
        # Shorthand: `- backend.megatron.lr: [1e-4, 3e-4]` means `- params: {...}`.
        return [Part(layers, ()) for layers in _params(group, path, where)]

    kinds = [key for key in group if key in _KINDS]
    if len(kinds) != 1:
        has = f"it has {_names(kinds)}" if kinds else "it has none"
        raise fail(
            f"{what} needs exactly one of 'groups', 'params', 'configs'; {has}",
            where(path),
            _key(path),
            hint="'params' sweeps keys, 'configs' lists points, 'groups' nests groups",
        )
    if unknown:
        raise _unknown_key(unknown[0], path, where, choices, what)

    kind = kinds[0]
    combine = _type(group, path, where)
    filters = (_filter(group, path, where),) if "filter" in group else ()
    defaults = _defaults(group, path, where)
    prefix = (defaults,) if defaults is not None else ()

    inner: list[Part]
    if kind == "params":
        params_path = (*path, "params")
        params = _mapping(group["params"], params_path, where, "params")
        if not params:
            raise fail("params needs at least one swept key", where(params_path), _key(params_path))
        inner = [Part(layers, ()) for layers in _params(params, params_path, where)]
    elif kind == "configs":
        inner = _configs(group, path, where)
    else:
        inner = _groups(group, path, where, combine)

    if not prefix and not filters:
        return inner
    return [Part((*prefix, *part.layers), (*filters, *part.filters)) for part in inner]


def _groups(group: Mapping[str, object], path: KeyPath, where: Where, combine: str) -> list[Part]:
    groups_path = (*path, "groups")
    items = _list(group["groups"], groups_path, where, "groups")
    children = [
        _group(item, (*groups_path, number), where, "a sweep group")
        for number, item in enumerate(items)
    ]
    if combine == "list":
        return [part for child in children for part in child]
    # itertools.product varies the last child fastest, so the first child is slowest.
    return [
        Part(
            tuple(itertools.chain.from_iterable(part.layers for part in combo)),
            tuple(itertools.chain.from_iterable(part.filters for part in combo)),
        )
        for combo in itertools.product(*children)
    ]


def _configs(group: Mapping[str, object], path: KeyPath, where: Where) -> list[Part]:
    configs_path = (*path, "configs")
    entries = _list(group["configs"], configs_path, where, "configs")
    parts: list[Part] = []
    for number, entry in enumerate(entries):
        entry_path = (*configs_path, number)
        node = _mapping(entry, entry_path, where, "a configs entry")
        # An entry with any group word is a nested group (and is checked as one), so that
        # `{stage: x, filter: ...}` is an error rather than a config key named `filter`.
        if any(key in _GROUP_WORDS for key in node):
            parts.extend(_group(node, entry_path, where, "a configs entry"))
            continue
        values, origins = _values(node, entry_path, where)
        parts.append(Part((Layer(values, origins, frozenset(values)),), ()))
    return parts


def _params(node: Mapping[str, object], path: KeyPath, where: Where) -> list[tuple[Layer, ...]]:
    """The product of `key: [alternatives]` lists, first key slowest, one layer per key."""
    choices: list[list[Layer]] = []
    for key, alternatives in node.items():
        _check_value_key(key, path, where)
        key_path = (*path, key)
        if not isinstance(alternatives, list):
            raise fail(
                f"a swept key needs a list of alternatives, got {_kind(alternatives)}",
                where(key_path),
                _key(key_path),
                hint=f"to sweep a single value write [{alternatives!r}]; "
                "to set a value without sweeping it, put it under defaults",
            )
        if not alternatives:
            raise fail(
                "a swept key needs at least one alternative", where(key_path), _key(key_path)
            )
        # A swept key is tied to nothing else: the stage alone varies along it.
        together = frozenset({key})
        choices.append(
            [
                Layer({key: value}, {key: where((*key_path, number))}, together)
                for number, value in enumerate(alternatives)
            ]
        )
    return list(itertools.product(*choices))


def _defaults(group: Mapping[str, object], path: KeyPath, where: Where) -> Layer | None:
    """`defaults` plus the dotted keys written beside it: one layer, all set together."""
    values: dict[str, object] = {}
    origins: dict[str, Origin | None] = {}
    if "defaults" in group:
        defaults_path = (*path, "defaults")
        node = _mapping(group["defaults"], defaults_path, where, "defaults")
        values, origins = _values(node, defaults_path, where)
    for key, value in group.items():
        if key in _GROUP_WORDS:
            continue
        key_path = (*path, key)
        if key in values:
            raise fail(
                "this key is set both here and under defaults",
                where(key_path),
                _key(key_path),
                hint="keep one of the two",
            )
        values[key] = value
        origins[key] = where(key_path)
    return Layer(values, origins, frozenset(values)) if values else None


def _values(
    node: Mapping[str, object], path: KeyPath, where: Where
) -> tuple[dict[str, object], dict[str, Origin | None]]:
    values: dict[str, object] = {}
    origins: dict[str, Origin | None] = {}
    for key, value in node.items():
        _check_value_key(key, path, where)
        values[key] = value
        origins[key] = where((*path, key))
    return values, origins


def _type(group: Mapping[str, object], path: KeyPath, where: Where) -> str:
    combine = group.get("type", "product")
    if isinstance(combine, str) and combine in _TYPES:
        return combine
    type_path = (*path, "type")
    raise fail(
        f"unknown group type {combine!r}; expected 'product' or 'list'",
        where(type_path),
        _key(type_path),
        hint=did_you_mean(str(combine), _TYPES),
    )


def _filter(node: Mapping[str, object], path: KeyPath, where: Where) -> SweepFilter:
    expr = node["filter"]
    filter_path = (*path, "filter")
    if not isinstance(expr, (bool, str)):
        raise fail(
            f"a filter must be true, false or an interpolation string, got {_kind(expr)}",
            where(filter_path),
            _key(filter_path),
            hint="for example \"\\${oc.eval:'\\${backend.megatron.lr} <= 1e-3'}\"",
        )
    return SweepFilter(expr, where(filter_path))


def _mapping(node: object, path: KeyPath, where: Where, what: str) -> Mapping[str, object]:
    if isinstance(node, Mapping):
        return node
    raise fail(f"{what} must be a mapping, got {_kind(node)}", where(path), _key(path))


def _list(node: object, path: KeyPath, where: Where, what: str) -> list[object]:
    if not isinstance(node, list):
        raise fail(f"{what} must be a list, got {_kind(node)}", where(path), _key(path))
    if not node:
        raise fail(f"{what} is an empty list", where(path), _key(path))
    return node


def _check_value_key(key: object, path: KeyPath, where: Where) -> None:
    key_path = (*path, str(key))
    if isinstance(key, str) and key.count(".") >= MAX_DEPTH:
        raise fail(f"a key of more than {MAX_DEPTH} parts", where(key_path), _key(key_path))
    if isinstance(key, str) and key and "" not in key.split("."):
        return
    raise fail(
        f"{key!r} is not a config key",
        where(key_path),
        _key(key_path),
        hint="keys are dotted config paths such as backend.megatron.lr",
    )


def _unknown_key(
    key: object, path: KeyPath, where: Where, choices: tuple[str, ...], what: str
) -> ConfigError:
    key_path = (*path, str(key))
    hint = did_you_mean(str(key), choices)
    if hint is None and key == "base_values":
        hint = "base_values is only allowed at the top of sweep"
    if hint is None:
        hint = "config values for every point of a group go under 'defaults'"
    return fail(f"unknown key {str(key)!r} in {what}", where(key_path), _key(key_path), hint=hint)


def _is_dotted(key: object) -> bool:
    return isinstance(key, str) and "." in key


def _key(path: KeyPath) -> str:
    """`sweep.groups[0].params.backend.megatron.lr`: the error's key for a path."""
    return "sweep" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _names(keys: list[str]) -> str:
    return " and ".join(f"'{key}'" for key in keys)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
