"""Read one config file of the defaults tree: find it in the config library, place its keys by
its `# @package` header, and parse its `defaults` list into entries. Hydra's defaults-list
language, kept to what predecessor configs use: `/group: option`, `group: option`,
`override /group: option`, `optional`, option lists and `_self_`. `compose.py` walks the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Origin, did_you_mean, fail
from .library import Library
from .load import Loaded, load_file


@dataclass
class Node:
    """One config file in the defaults tree."""

    loaded: Loaded
    group: str  # the folder it lives in, '' at the top: relative entries resolve against it
    package: tuple[str, ...]  # where its keys land in the tree
    entries: list[Entry] = field(default_factory=list)


@dataclass
class Entry:
    """One item of a defaults list."""

    origin: Origin
    self_: bool = False
    group: str | None = None  # absolute group path for group entries
    options: list[str] | None = None  # chosen options; None for `_self_` and plain configs
    config: str | None = None  # absolute config path ('experiments/base') for plain entries
    override: bool = False
    optional: bool = False


def dotted(group: str) -> tuple[str, ...]:
    """Where a group's keys land by default: `backend/megatron` -> ('backend', 'megatron')."""
    return tuple(part for part in group.split("/") if part)


def load_primary(library: Library, experiment: Path | None, config_ref: str | None) -> Node:
    """The experiment's node: a file, or a reference into the library (`--config-ref`)."""
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
    node = Node(loaded=loaded, group=group, package=())
    node.entries = _parse_defaults(loaded, group)
    return node


def _check_primary_package(loaded: Loaded) -> None:
    # The experiment always lands at the root; a header that says otherwise is a mistake.
    if loaded.package not in (None, "_global_"):
        raise fail(
            f"the experiment file must be '# @package _global_', not '{loaded.package}'",
            Origin(loaded.display, 1, 1),
        )


def load_node(
    library: Library,
    ref: str,
    group: str,
    package: tuple[str, ...],
    entry: Entry | None = None,
) -> Any:
    """The node for config `ref`, or None for a missing `optional` choice."""
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
    node = Node(loaded=loaded, group=group, package=_package(loaded, group, package))
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
        return dotted(group)
    return tuple(part for part in header.split(".") if part)


def _parse_defaults(loaded: Loaded, group: str) -> list[Entry]:
    raw = loaded.data.get("defaults")
    if raw is None:
        return []
    where = loaded.origins.get(("defaults",), loaded.origins[()])
    if not isinstance(raw, list):
        raise fail("'defaults' must be a list", where, key="defaults")
    entries: list[Entry] = []
    for index, item in enumerate(raw):
        origin = loaded.origins.get(("defaults", index), where)
        entries.append(_parse_entry(item, group, origin))
    if sum(e.self_ for e in entries) > 1:
        raise fail("'_self_' appears twice in the defaults list", where, key="defaults")
    return entries


def _parse_entry(item: Any, group: str, origin: Origin) -> Entry:
    if isinstance(item, str):
        if item == "_self_":
            return Entry(origin=origin, self_=True)
        return Entry(origin=origin, config=_absolute(item, group, origin))
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
    return Entry(
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
