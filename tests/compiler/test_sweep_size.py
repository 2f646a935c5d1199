"""A sweep's size is counted from its factors, and a sweep too large is refused before it is
expanded: in well under a second, naming each factor."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler.errors import ConfigError
from oellm.compiler.expand import expand
from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.sweep_size import sweep_size

SWEEPS: list[dict[str, Any]] = [
    {},
    {"params": {"a": [1, 2, 3], "b": [1, 2]}},
    {"grids": [{"a": [1, 2], "b": [1, 2, 3]}, {"c": [1, 2, 3, 4]}], "base_values": {"d": 1}},
    {"base_values": {"d": 1}},
    {"configs": [{"a": 1}, {"a": 2}, {"params": {"b": [1, 2, 3]}}]},
    {
        "type": "product",
        "groups": [
            {"params": {"a": [1, 2, 3]}},
            {
                "type": "list",
                "groups": [
                    {"configs": [{"b": 1}, {"b": 2}]},
                    {"params": {"c": [1, 2, 3, 4]}, "defaults": {"x": 1}},
                ],
            },
        ],
    },
    {"type": "list", "groups": [{"a": [1, 2]}, {"b": [1, 2, 3]}], "defaults": {"x": 1}},
]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_the_count_matches_the_expansion(sweep: dict[str, Any]) -> None:
    assert sweep_size(sweep).points == len(expand(sweep, lambda path: None))


def test_the_factors_are_named() -> None:
    size = sweep_size(SWEEPS[5])
    assert size.points == 18
    assert str(size) == "3 a x (2 configs + 4 c)"
    assert not size.filtered


def test_a_filter_makes_the_count_an_upper_bound() -> None:
    assert sweep_size({"params": {"a": [1, 2]}, "filter": True}).filtered
    assert sweep_size({"groups": [{"a": [1], "filter": "x"}]}).filtered


def exp(tmp_path: Path, sweep: str, extra: str = "") -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "project: {name: 'fz_${index}'}\nbackend: {bash: {command: 'true'}}\n"
        "vars: {a: 0, b: 0, c: 0, d: 0}\n" + extra + "sweep:\n" + sweep,
        encoding="utf-8",
    )
    return path


def refused(path: Path, *overrides: str) -> str:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        compile_bundle(CompileRequest(experiment=path, overrides=overrides))
    assert time.monotonic() - started < 5  # expanding even 1e6 points would take far longer
    (problem,) = info.value.problems
    return problem.render().replace(f"{path.parent}/", "")


def hundred(key: str) -> str:
    return f"    vars.{key}: [{', '.join(map(str, range(100)))}]\n"


def test_a_huge_product_is_refused_before_expanding(tmp_path: Path) -> None:
    path = exp(tmp_path, "  params:\n" + "".join(hundred(k) for k in "abcd"))
    assert refused(path).startswith(
        "exp.yaml:4:1: sweep: the sweep has 100,000,000 points "
        "(100 vars.a x 100 vars.b x 100 vars.c x 100 vars.d); the limit is 100,000\n"
        "  hint: sweep fewer values"
    )


def test_the_cap_can_be_raised_and_lowered(tmp_path: Path) -> None:
    path = exp(tmp_path, "  params:\n" + hundred("a"), "slurm: {limits: {max_sweep_points: 99}}\n")
    assert "the sweep has 100 points (100 vars.a); the limit is 99" in refused(path)
    path = exp(tmp_path, "  params:\n" + hundred("a") + hundred("b") + hundred("c"))
    message = refused(path, "slurm.limits.max_jobs=50", "++slurm.limits.max_sweep_points=2000000")
    # Past the cap's check, the job limit judges the exact count (there is no filter).
    assert (
        "the sweep has 1,000,000 points (100 vars.a x 100 vars.b x 100 vars.c), each a job; "
        "the site lets one user queue 50" in message
    )


def test_with_a_filter_only_the_expanded_bundle_is_held_to_max_jobs(tmp_path: Path) -> None:
    sweep = "  params:\n" + hundred("a") + "  filter: \"\\\\${oc.eval:'\\\\${vars.a} < 3'}\"\n"
    path = exp(tmp_path, sweep)
    bundle = compile_bundle(CompileRequest(experiment=path, overrides=["slurm.limits.max_jobs=3"]))
    assert len(bundle.lock_json["jobs"]) == 3
