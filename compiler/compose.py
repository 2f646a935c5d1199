"""Compose one config tree from the experiment, its `defaults` lists and the config library.

Walks the defaults tree that `defaults_list.py` reads: `_self_` ordering, which choice of a group
wins (the root's, the experiment's, `override /group: option`, `optional`, the command line's
`group=option` and `+group=option`), then command-line value overrides (`a.b=1`, `+a.b=1`,
`++a.b=1`, `~a.b`). The root config `oellm.yaml` supplies the groups an experiment does not name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .defaults_list import Entry, Node, dotted, load_node, load_primary
from .errors import Origin, did_you_mean, fail
from .library import Library
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


def compose(
    library: Library,
    experiment: Path | None,
    config_ref: str | None,
    overrides: Sequence[str],
) -> Composed:
    """Compose the experiment (a file or a library reference) with the library and overrides."""
    parsed = parse_overrides(overrides, library)
    selections = {o.key: o for o in parsed if o.kind == "group"}

    root = load_node(library, ROOT_CONFIG, group="", package=())
    primary = load_primary(library, experiment, config_ref)

    # Groups the experiment or the command line chooses replace the root's choice in place,
    # so an experiment naming only `/backend: megatron` still gets the root's slurm, job, ...
    replaced: dict[str, Entry] = {}
    root_groups = {e.group for e in root.entries if e.group}
    kept: list[Entry] = []
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
        replaced[key] = Entry(origin=sel.origin, group=key, options=[str(sel.value)])

    tree: dict[str, Any] = {}
    origins: dict[KeyPath, Origin] = {}
    choices: dict[str, list[str]] = {}
    files: list[str] = []
    seen_groups: set[str] = set()
    chosen = root_groups | {e.group for e in primary.entries if e.group}
    appended, late_overrides = _appended(
        library, selections, chosen, replaced, seen_groups, choices
    )

    def visit(node: Node, stack: tuple[str, ...]) -> None:
        if node.loaded.display in stack:
            cycle = " -> ".join((*stack, node.loaded.display))
            raise fail(f"defaults lists include each other: {cycle}", node.loaded.origins[()])
        stack = (*stack, node.loaded.display)
        entries = node.entries
        if not any(e.self_ for e in entries):
            entries = [*entries, Entry(origin=node.loaded.origins[()], self_=True)]
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
            entry = Entry(origin=sel.origin, group=key, options=[str(sel.value)])
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
    replaced: dict[str, Entry],
    seen_groups: set[str],
    choices: dict[str, list[str]],
) -> tuple[list[Node], list[Entry]]:
    """`+group=option` for a group nobody chose appends it to the experiment's defaults, as in
    Hydra's experiment pattern (`+experiment=e1`). It is read before the tree is built, so that
    its `override /group: option` entries replace choices made anywhere in the tree; a choice
    on the command line still wins over them."""
    nodes: list[Node] = []
    overrides: list[Entry] = []
    for key, sel in selections.items():
        if key in chosen or not sel.text.startswith("+"):
            continue
        entry = Entry(origin=sel.origin, group=key, options=[str(sel.value)])
        for node in _children(library, entry, {}, seen_groups, choices):
            kept: list[Entry] = []
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
    entry: Entry,
    replaced: dict[str, Entry],
    seen_groups: set[str],
    choices: dict[str, list[str]],
) -> Iterator[Node]:
    if entry.config is not None:
        group = entry.config.rpartition("/")[0]
        node = load_node(library, entry.config, group=group, package=dotted(group), entry=entry)
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
        chosen = Entry(origin=origin, group=group, options=[option], optional=chosen_by.optional)
        node = load_node(
            library, f"{group}/{option}", group=group, package=dotted(group), entry=chosen
        )
        if node is not None:
            yield node


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
