"""Which parts of a job's config depend on its sweep point, and the resolved values of the rest,
shared by every job whose point sets the same keys.

A sweep of 10,000 jobs changes a few values per job; the rest of the config (most of it)
resolves to the same values for each. The interpolations' keys are read from their templates
once, and a value is "dependent" when its template refers, directly or through other values,
to a key the point sets (or to a mapping holding one, or through one). Everything else is
resolved by the first job that needs it and taken as it is by the next: the same value, the
same errors (an independent value that fails fails in the first job, as before), the same
positions (`derived` keeps where each such value came from).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .template import Call, Key, ParseError, Part, parse
from .tree import KeyPath

_Path = tuple[str, ...]  # list indices as text: `${a.0}` and the tree's ("a", 0) are one place


def _text(path: KeyPath) -> _Path:
    return tuple(str(p) for p in path)


class Shared:
    """The values resolved once for every job of one set of swept keys."""

    def __init__(
        self, base: dict[str, Any], swept: Iterable[KeyPath], lasting: set[int] | None = None
    ) -> None:
        self._dependent = _dependent(base, {_text(p) for p in swept})
        self._ancestors = {d[:n] for d in self._dependent for n in range(len(d) + 1)}
        self._known: dict[KeyPath, bool] = {}
        self.values: dict[KeyPath, Any] = {}
        # Where an independent value that only refers elsewhere really came from.
        self.derived: dict[KeyPath, Any] = {}
        # Ids of the mappings and lists kept in `values`: alive, unchanged, for the compile.
        self.lasting = set() if lasting is None else lasting

    @property
    def dependent(self) -> set[_Path]:
        """The swept paths and the paths of the templates that read them (list indices as
        text)."""
        return self._dependent

    def independent(self, path: KeyPath) -> bool:
        """Whether the value at `path` is the same for every job of these swept keys."""
        known = self._known.get(path)
        if known is None:
            text = _text(path)
            known = text not in self._ancestors and not any(
                text[:n] in self._dependent for n in range(len(text))
            )
            self._known[path] = known
        return known


def _dependent(base: dict[str, Any], swept: set[_Path]) -> set[_Path]:
    """The swept paths and every interpolated text that reads, at any depth, one of them."""
    reads: dict[_Path, list[_Path] | None] = {}  # None: its reads are not known statically
    for path, text in _templates(base, ()):
        reads[path] = _reads(text, path)
    dependent = set(swept)
    ancestors = {d[:n] for d in dependent for n in range(len(d) + 1)}
    changed = True
    while changed:
        changed = False
        for path, targets in reads.items():
            if path in dependent:
                continue
            if targets is None or any(
                t in ancestors or any(t[:n] in dependent for n in range(len(t))) for t in targets
            ):
                dependent.add(path)
                ancestors.update(path[:n] for n in range(len(path) + 1))
                changed = True
    return dependent


def _templates(node: Any, path: _Path) -> Iterator[tuple[_Path, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if path or key != "sweep":  # the sweep's values reach jobs as swept keys
                yield from _templates(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _templates(value, (*path, str(index)))
    elif isinstance(node, str) and "${" in node:
        yield path, node


def _reads(text: str, path: _Path) -> list[_Path] | None:
    """The keys the template at `path` reads, or None when that depends on values (a key
    chosen by `oc.select`) or the template is broken (each job then reports it, as before)."""
    try:
        template = parse(text)
    except ParseError:
        return None
    found: list[_Path] = []
    return found if all(_gather(part, path, found) for part in template) else None


def _gather(part: Part, path: _Path, found: list[_Path]) -> bool:
    if isinstance(part, str):
        return True
    if isinstance(part, Key):
        if part.up == 0:
            found.append(part.parts)
        elif part.up <= len(path):
            found.append((*path[: -part.up], *part.parts))
        else:
            return False
        return True
    assert isinstance(part, Call)
    if part.name == "oc.select":
        return False
    return all(_gather(p, path, found) for arg in part.args for p in arg.parts)
