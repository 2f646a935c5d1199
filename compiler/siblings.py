"""Sibling references between stages: `${sibling.STAGE.KEY}`.

The sibling of a job in stage STAGE is the job of that stage whose swept values agree with the
job's own on every key both set, leaving out `stage` and the keys set together with it (same
`configs` entry or same group `defaults`). Matching goes through an index per stage and key
set, never through all pairs of jobs. The stages form a DAG (graphlib); a cycle is an error.
KEY is any key of the sibling's resolved config (`job.base_output_dir`,
`backend.megatron.save`, `vars.x`), or one of the short names in `SHORTCUTS`; siblings are
resolved first, so a reference reads a finished value.
"""

from __future__ import annotations

import graphlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, Origin, Problem, did_you_mean
from .sweep_point import Point
from .tree import strings

# The short names of the first design, kept: they read the sibling's job section.
SHORTCUTS = {
    "name": ("job", "name"),
    "output_dir": ("job", "base_output_dir"),
    "log_path": ("job", "log_path"),
    "log_path_current": ("job", "log_path_current"),
}
_REFERENCE = re.compile(r"\$\{\s*sibling\.([^.}\s]+)\.([^}\s]*)\s*\}")


@dataclass(frozen=True)
class Reference:
    stage: str
    field: str
    key: str  # the dotted key whose value holds the reference
    origin: Origin | None


def references(point: Point, base_refs: Sequence[Reference]) -> list[Reference]:
    """The sibling references a point makes: in its own values and in the base config."""
    found = [
        Reference(stage, field, key, point.origins.get(key))
        for key, value in point.values.items()
        for stage, field in _scan(value)
    ]
    overridden = set(point.values)
    found.extend(r for r in base_refs if r.key not in overridden)
    return found


def point_references(
    points: Sequence[Point], sweep: Any, base_refs: Sequence[Reference]
) -> dict[int, list[Reference]]:
    """The sibling references of the points that make any, by point index. A point's values
    come from its sweep: when none of the sweep's texts names a sibling and the base makes no
    reference, no point does, and the points (10,000 of a large sweep) are not read."""
    if not base_refs and not any("sibling." in text for text in strings(sweep)):
        return {}
    return {p.index: made for p in points if (made := references(p, base_refs))}


def base_references(tree: Mapping[str, Any], origins: Mapping[Any, Origin]) -> list[Reference]:
    out: list[Reference] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not path and k == "sweep":
                    continue
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))
        else:
            for stage, field in _scan(node):
                key = ".".join(map(str, path))
                out.append(Reference(stage, field, key, origins.get(path)))

    walk(tree, ())
    return out


def _scan(value: Any) -> Iterable[tuple[str, str]]:
    for text in strings(value):
        if "sibling." in text:
            for match in _REFERENCE.finditer(text.replace("\\${", "${")):
                yield match.group(1), match.group(2)


def stage_order(points: Sequence[Point], refs: Mapping[int, list[Reference]]) -> list[str | None]:
    """Stages in an order where every stage comes after the stages it references."""
    graph: dict[str | None, set[str | None]] = {}
    edges: dict[tuple[str | None, str], list[Reference]] = {}
    for point in points:
        stage = _stage(point)
        graph.setdefault(stage, set())
        for ref in refs.get(point.index, []):
            graph[stage].add(ref.stage)
            found = edges.setdefault((stage, ref.stage), [])
            if ref not in found:
                found.append(ref)
    stages = set(graph)
    for (stage, target), found in edges.items():
        if target not in stages:
            raise ConfigError(
                Problem(
                    f"no job has stage '{target}' (referenced by stage '{stage}')",
                    found[0].origin,
                    key=found[0].key,
                    hint=did_you_mean(target, [s for s in stages if s]),
                )
            )
    sorter = graphlib.TopologicalSorter({k: v for k, v in graph.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        # graphlib lists the cycle against the reference direction: reverse it.
        raise _cycle([*reversed(exc.args[1])], edges) from None
    return order


def _cycle(
    stages: list[str | None], edges: Mapping[tuple[str | None, str], list[Reference]]
) -> ConfigError:
    """Name the chain of references around a stage cycle, key by key where the keys line up:
    `a: vars.x = ${sibling.b.vars.y}` is followed by the reference that `b`'s `vars.y` makes."""
    chain: list[Reference] = []
    for stage, target in itertools.pairwise(stages):
        found = edges[(stage, str(target))]
        wanted = chain[-1].field if chain else None
        chain.append(next((r for r in found if wanted and _feeds(wanted, r.key)), found[0]))
    links = [
        f"stage '{s}' {r.key} -> ${{sibling.{r.stage}.{r.field}}}"
        for s, r in zip(stages, chain, strict=False)
    ]
    if len(chain) == 1:
        message = f"stage '{stages[0]}' refers to a sibling in its own stage: {links[0]}"
        hint = "a sibling is a job of another stage; give the two jobs different stages"
    else:
        message = "sibling references form a cycle: " + ", then ".join(links)
        hint = "a stage can read only from stages that do not read from it"
    return ConfigError(Problem(message, chain[0].origin, key=chain[0].key, hint=hint))


def _feeds(field: str, key: str) -> bool:
    """Whether reading `field` of a job reads the value written at `key` (or below it)."""
    return field == key or key.startswith(field + ".") or field.startswith(key + ".")


def _stage(point: Point) -> str | None:
    stage = point.values.get("stage")
    return stage if isinstance(stage, str) else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class SiblingIndex:
    """Find the jobs of a stage that match a point, through hashed projections."""

    def __init__(self, points: Sequence[Point]) -> None:
        # stage -> the key sets its points match on -> those points
        self._groups: dict[str, dict[frozenset[str], list[Point]]] = {}
        for point in points:
            stage = _stage(point)
            if stage is not None:
                keys = self.matching_keys(point)
                self._groups.setdefault(stage, {}).setdefault(keys, []).append(point)
        self._indexes: dict[tuple[str, frozenset[str], frozenset[str]], dict[Any, list[Point]]] = {}

    @staticmethod
    def matching_keys(point: Point) -> frozenset[str]:
        return frozenset(k for k in point.values if k != "stage" and k not in point.stage_keys)

    def find(self, point: Point, stage: str) -> list[Point]:
        """Every job of `stage` that agrees with `point` on all the keys both match on."""
        mine = self.matching_keys(point)
        out: list[Point] = []
        # In the usual sweep a stage has one key set, so this loop runs once.
        for keys, group in self._groups.get(stage, {}).items():
            shared = keys & mine
            ordered = tuple(sorted(shared))
            index = self._indexes.get((stage, keys, shared))
            if index is None:
                index = {}
                for cand in group:
                    projection = tuple(_canonical(cand.values[k]) for k in ordered)
                    index.setdefault(projection, []).append(cand)
                self._indexes[(stage, keys, shared)] = index
            out.extend(index.get(tuple(_canonical(point.values[k]) for k in ordered), []))
        return sorted((c for c in out if c.index != point.index), key=lambda p: p.index)


@dataclass(frozen=True)
class Sibling:
    """A resolved job as its dependents see it: its config (less its own `sibling` part) and
    the short names, plus the ids of everything in it, so that a dependent's resolver takes
    the values as they are instead of reading `${` in finished text as an interpolation."""

    name: str
    view: Mapping[str, Any]
    ids: frozenset[int]

    def __reduce__(self) -> tuple[Any, tuple[str, Mapping[str, Any]]]:
        # Ids are of this process's objects: a copy sent from a worker process of the compile
        # (`fanout.py`) takes the ids of its own.
        return _seen, (self.name, self.view)


def sibling_of(config: Mapping[str, Any]) -> Sibling:
    view: dict[str, Any] = {k: v for k, v in config.items() if k != "sibling"}
    job = config["job"]
    for short, (_, key) in SHORTCUTS.items():
        view[short] = job.get(key)
    return _seen(job["name"], view)


def _seen(name: str, view: Mapping[str, Any]) -> Sibling:
    """The sibling of this name and view, with the ids of everything in the view."""
    ids: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ids.add(id(node))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            ids.add(id(node))
            for value in node:
                walk(value)
        elif isinstance(node, str) and "$" in node:
            ids.add(id(node))

    walk(view)
    return Sibling(name, view, frozenset(ids))


def gather(
    point: Point,
    refs: Sequence[Reference],
    index: SiblingIndex,
    done: Mapping[int, Sibling | None],
) -> dict[str, Sibling] | None:
    """The siblings a point references by stage, or None when one was filtered out."""
    found: dict[str, Sibling] = {}
    for ref in refs:
        sibling = found.get(ref.stage)
        if sibling is None:
            matches = index.find(point, ref.stage)
            if len(matches) != 1:
                raise _match_problem(point, ref, matches)
            match = done[matches[0].index]
            if match is None:
                # Filters only remove: a job whose sibling was filtered out goes with it.
                return None
            sibling = found[ref.stage] = match
        _check_key(sibling, ref)
    return found


def _check_key(sibling: Sibling, ref: Reference) -> None:
    node: Any = sibling.view
    parts = ref.field.split(".") if ref.field else [""]
    for depth, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            known = list(node) if isinstance(node, dict) else []
            where = ".".join(parts[:depth])
            has = f"'{where}' has no key '{part}'" if where else f"has no key '{part}'"
            raise ConfigError(
                Problem(
                    f"'${{sibling.{ref.stage}.{ref.field}}}': the sibling job '{sibling.name}' "
                    f"(stage '{ref.stage}') {has}",
                    ref.origin,
                    key=ref.key,
                    hint=did_you_mean(part, known)
                    or "a sibling offers every key of its resolved config (job.base_output_dir, "
                    "backend.megatron.save, vars.x, ...) and the short names "
                    + ", ".join(SHORTCUTS),
                )
            )


def _show(point: Point) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in point.values.items() if "${" not in str(v))
    return f"sweep point {point.index} {{{shown}}}"


def _match_problem(point: Point, ref: Reference, matches: list[Point]) -> ConfigError:
    if not matches:
        message = f"{_show(point)} has no sibling in stage '{ref.stage}'"
        hint = (
            "a sibling agrees on every swept key both jobs set, except stage and the keys set "
            "together with it; sweep the same values in both stages"
        )
    else:
        listed = "; ".join(_show(m) for m in matches[:5])
        message = f"{_show(point)} has {len(matches)} siblings in stage '{ref.stage}': {listed}"
        hint = "sweep a key that tells them apart in both stages, or give them different stages"
    return ConfigError(Problem(message, ref.origin, key=ref.key, hint=hint))
