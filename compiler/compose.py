"""Compose one config tree from the experiment, its `defaults` lists and the config library.

Hydra's defaults-list language, kept to what predecessor configs use: `/group: option`,
`group: option`, `override /group: option`, `optional`, option lists, `_self_` ordering and
`# @package` headers; then command-line overrides (`a.b=1`, `+a.b=1`, `++a.b=1`, `~a.b`,
`group=option`). The root config `oellm.yaml` supplies the groups an experiment does not name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Origin, did_you_mean, fail
from .library import Library
from .load import Loaded, load_file
from .overrides import Override, parse_overrides
from .tree import KeyPath, delete_path, get_path, merge, set_path

ROOT_CONFIG = "oellm"


@dataclass(frozen=True)
class Composed:
    """The merged tree, where each key came from, and the group choices that made it."""

    tree: dict[str, Any]
    origins: dict[KeyPath, Origin]
    choices: dict[str, list[str]]
    files: list[str]


@dataclass
class _Node:
    """One config file in the defaults tree."""

    loaded: Loaded
    group: str  # the folder it lives in, '' at the top: relative entries resolve against it
    package: tuple[str, ...]  # where its keys land in the tree
    entries: list[_Entry] = field(default_factory=list)


@dataclass
class _Entry:
    """One item of a defaults list."""

    origin: Origin
    self_: bool = False
    group: str | None = None  # absolute group path for group entries
    options: list[str] | None = None  # chosen options; None for `_self_` and plain configs
    config: str | None = None  # absolute config path ('experiments/base') for plain entries
    override: bool = False
    optional: bool = False


def compose(
    library: Library,
    experiment: Path | None,
    config_ref: str | None,
    overrides: Sequence[str],
) -> Composed:
    """Compose the experiment (a file or a library reference) with the library and overrides."""
    parsed = parse_overrides(overrides, library)
    selections = {o.key: o for o in parsed if o.kind == "group"}

    root = _load_node(library, ROOT_CONFIG, group="", package=())
    primary = _load_primary(library, experiment, config_ref)

    # Groups the experiment or the command line chooses replace the root's choice in place,
    # so an experiment naming only `/backend: megatron` still gets the root's slurm, job, ...
    replaced: dict[str, _Entry] = {}
    root_groups = {e.group for e in root.entries if e.group}
    kept: list[_Entry] = []
    for entry in primary.entries:
        if entry.group is not None and entry.group in root_groups and entry.options is not None:
            if entry.optional and not any(
                library.find(f"{entry.group}/{option}") for option in entry.options
            ):
                # `optional /container: mine` without a mine.yaml keeps the root's choice:
                # skipping the group altogether would leave the config without one.
                continue
            replaced[entry.group] = entry
        elif entry.override and entry.group is not None:
            raise fail(
                f"'override /{entry.group}' names a group that nothing chose before",
                entry.origin,
                hint="drop 'override' to add the group",
            )
        else:
            kept.append(entry)
    primary.entries = kept
    for key, sel in selections.items():
        replaced[key] = _Entry(origin=sel.origin, group=key, options=[str(sel.value)])

    tree: dict[str, Any] = {}
    origins: dict[KeyPath, Origin] = {}
    choices: dict[str, list[str]] = {}
    files: list[str] = []
    seen_groups: set[str] = set()
    chosen = root_groups | {e.group for e in primary.entries if e.group}
    appended, late_overrides = _appended(
        library, selections, chosen, replaced, seen_groups, choices
    )

    def visit(node: _Node, stack: tuple[str, ...]) -> None:
        if node.loaded.display in stack:
            cycle = " -> ".join((*stack, node.loaded.display))
            raise fail(f"defaults lists include each other: {cycle}", node.loaded.origins[()])
        stack = (*stack, node.loaded.display)
        entries = node.entries
        if not any(e.self_ for e in entries):
            entries = [*entries, _Entry(origin=node.loaded.origins[()], self_=True)]
        for entry in entries:
            if entry.self_:
                content = {k: v for k, v in node.loaded.data.items() if k != "defaults"}
                merge(tree, origins, content, node.loaded.origins, node.package)
                files.append(node.loaded.display)
                if node is root:
                    visit(primary, stack)
                continue
            for child in _children(library, entry, replaced, seen_groups, choices):
                visit(child, stack)

    visit(root, ())
    for node in appended:
        visit(node, ())
    for entry in late_overrides:
        if entry.group not in seen_groups:
            raise fail(
                f"'override /{entry.group}' names a group that nothing chose before",
                entry.origin,
                hint="drop 'override' to add the group",
            )
    for key, sel in selections.items():
        if key not in seen_groups:
            # `group=option` for a group nobody chose: add it, as Hydra's `+group=option`.
            entry = _Entry(origin=sel.origin, group=key, options=[str(sel.value)])
            for child in _children(library, entry, {}, seen_groups, choices):
                visit(child, ())

    for override in parsed:
        if override.kind != "group":
            _apply_value_override(tree, origins, override)
    return Composed(tree, origins, choices, files)


def _appended(
    library: Library,
    selections: dict[str, Override],
    chosen: set[str],
    replaced: dict[str, _Entry],
    seen_groups: set[str],
    choices: dict[str, list[str]],
) -> tuple[list[_Node], list[_Entry]]:
    """`+group=option` for a group nobody chose appends it to the experiment's defaults, as in
    Hydra's experiment pattern (`+experiment=e1`). It is read before the tree is built, so that
    its `override /group: option` entries replace choices made anywhere in the tree; a choice
    on the command line still wins over them."""
    nodes: list[_Node] = []
    overrides: list[_Entry] = []
    for key, sel in selections.items():
        if key in chosen or not sel.text.startswith("+"):
            continue
        entry = _Entry(origin=sel.origin, group=key, options=[str(sel.value)])
        for node in _children(library, entry, {}, seen_groups, choices):
            kept: list[_Entry] = []
            for child in node.entries:
                if child.override and child.group is not None:
                    if child.group not in selections:
                        replaced[child.group] = child
                    overrides.append(child)
                else:
                    kept.append(child)
            node.entries = kept
            nodes.append(node)
    return nodes, overrides


def _children(
    library: Library,
    entry: _Entry,
    replaced: dict[str, _Entry],
    seen_groups: set[str],
    choices: dict[str, list[str]],
) -> Iterator[_Node]:
    if entry.config is not None:
        group = entry.config.rpartition("/")[0]
        node = _load_node(library, entry.config, group=group, package=_dotted(group), entry=entry)
        if node is not None:
            yield node
        return
    assert entry.group is not None and entry.options is not None
    group = entry.group
    chosen_by = replaced.get(group, entry)
    options, origin = chosen_by.options or [], chosen_by.origin
    if group in seen_groups:
        raise fail(f"group '{group}' is chosen twice", entry.origin, hint="use 'override /group'")
    seen_groups.add(group)
    choices[group] = list(options)
    for option in options:
        chosen = _Entry(origin=origin, group=group, options=[option], optional=chosen_by.optional)
        node = _load_node(
            library, f"{group}/{option}", group=group, package=_dotted(group), entry=chosen
        )
        if node is not None:
            yield node


def _dotted(group: str) -> tuple[str, ...]:
    return tuple(part for part in group.split("/") if part)


def _load_primary(library: Library, experiment: Path | None, config_ref: str | None) -> _Node:
    if (experiment is None) == (config_ref is None):
        raise fail("give either an experiment file or --config-ref, not both or neither")
    if config_ref is not None:
        ref = config_ref.removesuffix(".yaml").strip("/")
        found = library.find(ref)
        if found is None:
            folder, _, name = ref.rpartition("/")
            raise fail(
                f"no config '{ref}' in the config dirs ({library.describe()})",
                hint=did_you_mean(name, library.options(folder)),
            )
        path, display = found
        group = ref.rpartition("/")[0]
    else:
        assert experiment is not None
        path, display = experiment, str(experiment)
        group = library.group_of(experiment)
    loaded = _read(path, display)
    _check_primary_package(loaded)
    node = _Node(loaded=loaded, group=group, package=())
    node.entries = _parse_defaults(loaded, group)
    return node


def _check_primary_package(loaded: Loaded) -> None:
    # The experiment always lands at the root; a header that says otherwise is a mistake.
    if loaded.package not in (None, "_global_"):
        raise fail(
            f"the experiment file must be '# @package _global_', not '{loaded.package}'",
            Origin(loaded.display, 1, 1),
        )


def _load_node(
    library: Library,
    ref: str,
    group: str,
    package: tuple[str, ...],
    entry: _Entry | None = None,
) -> Any:
    found = library.find(ref)
    if found is None:
        if entry is not None and entry.optional:
            return None
        folder, _, name = ref.rpartition("/")
        origin = entry.origin if entry else None
        known = library.options(folder)
        if entry is not None and entry.group is not None:
            message = f"unknown option '{name}' for config group '{folder}'"
            hint = did_you_mean(name, known) or (
                f"known options: {', '.join(known)}" if known else None
            )
        else:
            message = f"config '{ref}' not found in the config dirs ({library.describe()})"
            hint = did_you_mean(name, known)
        raise fail(message, origin, hint=hint)
    path, display = found
    loaded = _read(path, display)
    node = _Node(loaded=loaded, group=group, package=_package(loaded, group, package))
    node.entries = _parse_defaults(loaded, group)
    return node


def _read(path: Path, display: str) -> Loaded:
    loaded = load_file(path, display)
    if not isinstance(loaded.data, dict):
        raise fail("a config file must hold a mapping at the top", Origin(display, 1, 1))
    return loaded


def _package(loaded: Loaded, group: str, default: tuple[str, ...]) -> tuple[str, ...]:
    header = loaded.package
    if header is None:
        return default
    if header == "_global_":
        return ()
    if header.startswith("_global_."):
        return tuple(header.removeprefix("_global_.").split("."))
    if header == "_group_":
        return _dotted(group)
    return tuple(part for part in header.split(".") if part)


def _parse_defaults(loaded: Loaded, group: str) -> list[_Entry]:
    raw = loaded.data.get("defaults")
    if raw is None:
        return []
    where = loaded.origins.get(("defaults",), loaded.origins[()])
    if not isinstance(raw, list):
        raise fail("'defaults' must be a list", where, key="defaults")
    entries: list[_Entry] = []
    for index, item in enumerate(raw):
        origin = loaded.origins.get(("defaults", index), where)
        entries.append(_parse_entry(item, group, origin))
    if sum(e.self_ for e in entries) > 1:
        raise fail("'_self_' appears twice in the defaults list", where, key="defaults")
    return entries


def _parse_entry(item: Any, group: str, origin: Origin) -> _Entry:
    if isinstance(item, str):
        if item == "_self_":
            return _Entry(origin=origin, self_=True)
        return _Entry(origin=origin, config=_absolute(item, group, origin))
    if not isinstance(item, dict) or len(item) != 1:
        raise fail(
            "a defaults entry is '_self_', a config name, or one 'group: option' pair",
            origin,
            key="defaults",
        )
    ((raw_key, value),) = item.items()
    words = raw_key.split()
    override = "override" in words[:-1]
    optional = "optional" in words[:-1]
    unknown = [w for w in words[:-1] if w not in ("override", "optional")]
    if unknown or not words:
        raise fail(
            f"unknown defaults keyword '{' '.join(unknown) or raw_key}'",
            origin,
            key="defaults",
            hint="write 'group: option', 'override /group: option' or 'optional group: option'",
        )
    name = words[-1]
    if "@" in name:
        raise fail("package overrides ('group@pkg') are not supported", origin, key="defaults")
    if value is None:
        options: list[str] = []
    elif isinstance(value, str):
        options = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        options = list(value)
    else:
        raise fail(
            f"the option for group '{name}' must be a name or a list of names",
            origin,
            key="defaults",
        )
    return _Entry(
        origin=origin,
        group=_absolute(name, group, origin),
        options=options,
        override=override,
        optional=optional,
    )


def _absolute(name: str, group: str, origin: Origin) -> str:
    """Resolve `/abs`, `rel` and `../rel` against the folder of the file that names them."""
    if name.startswith("/"):
        parts: list[str] = []
        rest = name.strip("/").split("/")
    else:
        parts = [p for p in group.split("/") if p]
        rest = name.split("/")
    for part in rest:
        if part == "..":
            if not parts:
                raise fail(f"'{name}' climbs above the config dir", origin, key="defaults")
            parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/".join(parts)


def _apply_value_override(
    tree: dict[str, Any], origins: dict[KeyPath, Origin], override: Override
) -> None:
    path = tuple(override.key.split("."))
    exists, parent_keys = get_path(tree, path)
    if override.kind == "delete":
        if not exists:
            raise fail(
                f"cannot delete '{override.key}': no such key",
                override.origin,
                hint=did_you_mean(path[-1], parent_keys),
            )
        if override.has_value and _value_at(tree, path) != override.value:
            raise fail(
                f"cannot delete '{override.key}': its value is {_value_at(tree, path)!r}, "
                f"not {override.value!r}",
                override.origin,
                hint=f"write ~{override.key} to delete it whatever its value",
            )
        delete_path(tree, origins, path)
        return
    if override.kind == "set" and not exists:
        raise fail(
            f"cannot set '{override.key}': no such key",
            override.origin,
            hint=did_you_mean(path[-1], parent_keys)
            or f"use '+{override.key}=...' to add a new key",
        )
    if override.kind == "add" and exists and _value_at(tree, path) != "???":
        raise fail(
            f"cannot add '{override.key}': it is already set",
            override.origin,
            hint=f"use '{override.key}=...' to change it",
        )
    set_path(tree, origins, path, copy.deepcopy(override.value), override.origin)


def _value_at(tree: dict[str, Any], path: KeyPath) -> Any:
    node: Any = tree
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node
