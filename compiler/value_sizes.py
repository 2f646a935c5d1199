"""The size of resolved values: the parts of a config that hold no interpolation (shared by
every job, with their sizes), the limit on the values one resolved config stands for (shared parts
counted once), and the limits on what one interpolation may produce.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, MutableMapping
from typing import Any

from .errors import ConfigError, Origin, fail
from .tree import KeyPath, dotted, origin_of

MAX_TEXT = 1_000_000
"""Characters (or values, for a mapping or list made text) one interpolation may produce."""

MAX_INT_BITS = 10_000
"""As `safeeval.MAX_INT_BITS`: any such integer can still be printed."""


MAX_VALUES = 1_000_000
"""Values one resolved config may hold, counting a value each time a reference repeats it."""


def static_parts(tree: Any) -> dict[int, int]:
    """Ids of the mappings and lists in `tree` that hold no interpolation at all, with the
    number of values in each.

    The per-job stage shares such parts with the base config instead of walking them again;
    the base stays alive for the whole compile, so these ids cannot be reused meanwhile.
    """
    found: dict[int, int] = {}

    def walk(node: Any) -> tuple[bool, int]:
        if isinstance(node, dict):
            walked = [walk(v) for v in node.values()]
        elif isinstance(node, list):
            walked = [walk(v) for v in node]
        else:
            return not (isinstance(node, str) and "$" in node), 1
        size = 1 + sum(size for _, size in walked)
        clean = all(ok for ok, _ in walked)
        if clean:
            found[id(node)] = size
        return clean, size

    walk(tree)
    return found


def check_expanded(
    config: dict[str, Any],
    origins: Mapping[KeyPath, Origin],
    sizes: MutableMapping[int, int],
    lasting: Container[int] = (),
) -> None:
    """Refuse a resolved config that repeats values past MAX_VALUES.

    A resolved value is shared wherever it is referenced, so `b: {x: ${a}, y: ${a}}` and so on
    for a few levels builds little but stands for billions of values to whatever walks it
    (validation, rendering). Sizes are counted once per shared part, so this is linear.
    `sizes` holds the sizes of parts known already; those of the parts in `lasting` (alive
    for the whole compile) are added to it, the others are forgotten with this config.
    """
    local: dict[int, int] = {}

    def size_of(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        found = local.get(id(node))
        return sizes.get(id(node), 1) if found is None else found

    pending: list[tuple[Any, bool]] = [(config, False)]
    while pending:
        node, children_done = pending.pop()
        key = id(node)
        if key in local or key in sizes:
            continue
        children = list(node.values()) if isinstance(node, dict) else list(node)
        if children_done:
            size = 1 + sum(size_of(child) for child in children)
            if key in lasting:
                sizes[key] = size
            else:
                local[key] = size
            continue
        pending.append((node, True))
        pending.extend((c, False) for c in children if isinstance(c, (dict, list)))
    if size_of(config) <= MAX_VALUES:
        return
    path: KeyPath = ()
    node = config
    while isinstance(node, (dict, list)):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        bigger = [(k, v) for k, v in items if size_of(v) > MAX_VALUES]
        if not bigger:
            break
        key, node = bigger[0]
        path = (*path, key)
    raise fail(
        f"references make this value hold {size_of(node):,} values; the limit is {MAX_VALUES:,}",
        origin_of(origins, path),
        key=dotted(path),
        hint="references that repeat other references multiply their size",
    )


def check_size(
    value: Any, origins: Mapping[KeyPath, Origin], path: KeyPath, budget: int = MAX_TEXT
) -> None:
    """Refuse a value too large to carry on: strings past MAX_TEXT characters, mappings
    and lists past MAX_TEXT values (counted with every shared part expanded, without ever
    expanding them), integers too long to print."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise fail(
                f"an interpolation makes an integer of more than {MAX_INT_BITS} bits",
                origin_of(origins, path),
                key=dotted(path),
            )
        return
    if isinstance(value, str):
        if len(value) > budget:
            raise too_big(origins, path)
        return
    if not isinstance(value, (dict, list)):
        return
    count = 0
    pending = [value]
    while pending:
        node = pending.pop()
        count += len(node) + 1 if isinstance(node, (str, dict, list)) else 1
        if count > budget:
            raise too_big(origins, path)
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def too_big(origins: Mapping[KeyPath, Origin], path: KeyPath) -> ConfigError:
    """The error for an interpolation that makes the value at `path` past MAX_TEXT."""
    return fail(
        f"interpolations make this value larger than {MAX_TEXT:,} characters",
        origin_of(origins, path),
        key=dotted(path),
        hint="references that repeat other references multiply their size",
    )
