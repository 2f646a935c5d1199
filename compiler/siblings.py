"""Sibling references between stages: `${sibling.STAGE.FIELD}`.

The sibling of a job in stage STAGE is the job of that stage whose swept values agree with the
job's own on every key both set, leaving out `stage` and the keys set together with it (same
`configs` entry or same group `defaults`). Matching goes through an index per stage and key
set, never through all pairs of jobs. The stages form a DAG (graphlib); a cycle is an error.
"""

from __future__ import annotations

import graphlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, Origin, Problem
from .expand import Point

FIELDS = ("name", "output_dir", "log_path", "log_path_current")
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
    if isinstance(value, str):
        if "sibling." in value:
            for match in _REFERENCE.finditer(value.replace("\\${", "${")):
                yield match.group(1), match.group(2)
    elif isinstance(value, list):
        for item in value:
            yield from _scan(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _scan(item)


def check_fields(refs: Iterable[Reference]) -> None:
    problems = [
        Problem(
            f"sibling field '{r.field}' does not exist",
            r.origin,
            key=r.key,
            hint=f"a sibling offers: {', '.join(FIELDS)}",
        )
        for r in refs
        if r.field not in FIELDS
    ]
    if problems:
        raise ConfigError(problems)


def stage_order(points: Sequence[Point], refs: Mapping[int, list[Reference]]) -> list[str | None]:
    """Stages in an order where every stage comes after the stages it references."""
    graph: dict[str | None, set[str | None]] = {}
    where: dict[tuple[str | None, str], Reference] = {}
    for point in points:
        stage = _stage(point)
        graph.setdefault(stage, set())
        for ref in refs.get(point.index, []):
            graph[stage].add(ref.stage)
            where.setdefault((stage, ref.stage), ref)
    stages = set(graph)
    for (stage, target), ref in where.items():
        if target not in stages:
            raise ConfigError(
                Problem(
                    f"no job has stage '{target}' (referenced by stage '{stage}')",
                    ref.origin,
                    key=ref.key,
                    hint=_closest(target, [s for s in stages if s]),
                )
            )
    sorter = graphlib.TopologicalSorter({k: v for k, v in graph.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = [str(s) for s in exc.args[1]]
        first: Reference | None = None
        if len(exc.args[1]) > 1:
            first = where.get((exc.args[1][0], exc.args[1][1]))
        raise ConfigError(
            Problem(
                "stages reference each other in a cycle: " + " -> ".join(cycle),
                first.origin if first else None,
                key=first.key if first else None,
            )
        ) from None
    return order


def _closest(word: str, choices: list[str]) -> str | None:
    from .errors import did_you_mean

    return did_you_mean(word, choices)


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
