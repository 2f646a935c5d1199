"""Sweep expansion: the README examples, precedence, stage keys, errors and the algebra."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from oellm.compiler.errors import ConfigError, Origin
from oellm.compiler.expand import expand
from oellm.compiler.sweep_point import Point, SweepFilter
from oellm.compiler.tree import KeyPath

LR = "backend.megatron.lr"
GBS = "backend.megatron.global_batch_size"
ITERS = "backend.megatron.train_iters"
LOAD = "backend.megatron.load"


def at(*path: str | int) -> Origin:
    """The fake position of a node: its path, so tests can say exactly where a value came from."""
    return Origin("/".join(str(part) for part in path), 1, 1)


def where(path: KeyPath) -> Origin:
    return at(*path)


def sweep_of(text: str) -> Any:
    return YAML(typ="safe").load(text)["sweep"]


def run(sweep: Any) -> list[Point]:
    points: list[Point] = expand(sweep, where)
    return points


def error_of(sweep: Any) -> tuple[str, str | None, str | None, Origin | None]:
    with pytest.raises(ConfigError) as caught:
        run(sweep)
    (problem,) = caught.value.problems
    return problem.message, problem.key, problem.hint, problem.origin


def column(points: list[Point], key: str) -> list[object]:
    return [point.values.get(key) for point in points]


# --- The predecessor README examples, verbatim ------------------------------------------------

GRID = r"""
sweep:
  base_values:
    backend.megatron.num_layers: 20
    backend.megatron.hidden_size: 896
    project.name: "experiment_\\${backend.megatron.lr}_\\${backend.megatron.global_batch_size}"
  grids:
    - backend.megatron.lr: [1e-4, 5e-4, 1e-3]
      backend.megatron.global_batch_size: [64, 128, 256]
"""

COMPOSABLE = r"""
sweep:
  type: list
  defaults:
    project.name: "tuning_\\${backend.megatron.lr}_\\${backend.megatron.global_batch_size}_\\${stage}"
  groups:
    - type: product
      groups:
        - params:
            backend.megatron.lr: [1e-4, 5e-4, 1e-3]
        - params:
            backend.megatron.global_batch_size: [64, 128]
      defaults:
        stage: small_batch
        backend.megatron.train_iters: 5000
    - type: product
      groups:
        - params:
            backend.megatron.lr: [5e-4, 1e-3, 2e-3]
        - params:
            backend.megatron.global_batch_size: [256, 512]
      defaults:
        stage: large_batch
        backend.megatron.train_iters: 5000
    - configs:
        - stage: production
          backend.megatron.lr: 5e-4
          backend.megatron.global_batch_size: 256
          backend.megatron.train_iters: 100000
        - stage: production
          backend.megatron.lr: 1e-3
          backend.megatron.global_batch_size: 128
          backend.megatron.train_iters: 100000
"""  # noqa: E501

MULTI_STAGE = r"""
sweep:
  type: list
  groups:
    - params:
        backend.megatron.lr: [2.5e-4, 5e-4, 1e-3]
        backend.megatron.global_batch_size: [64, 128, 256]
      defaults:
        stage: stable
        backend.megatron.train_iters: 18000

    - params:
        backend.megatron.lr: [2.5e-4, 5e-4, 1e-3]
        backend.megatron.global_batch_size: [64, 128, 256]
      defaults:
        stage: decay6B
        backend.megatron.train_iters: 36000
        backend.megatron.load: "\\${sibling.stable.output_dir}/checkpoints"
      job.start_conditions:
        - class_name: FileExistsCondition
          path: "\\${sibling.stable.output_dir}/checkpoints/done.txt"
      job.cancel_conditions:
        - class_name: SlurmStateCondition
          job_name: "\\${sibling.stable.name}"
          state: FAILED
"""

FILTERS = r"""
sweep:
  defaults:
    project.name: "experiment_\\${backend.megatron.lr}_\\${backend.megatron.global_batch_size}"
  type: 'product'
  groups:
    - backend.megatron.lr: [1e-4, 5e-4, 1e-3, 2e-3]
    - backend.megatron.global_batch_size: [64, 128, 256, 512, 1024]
  filter: "\\${oc.eval:'not (\\${backend.megatron.lr} > 1e-3 and \\${backend.megatron.global_batch_size} > 256)'}"
"""  # noqa: E501

NESTED = r"""
sweep:
  defaults:
    project.name: "tuning_\\${backend.megatron.lr}_\\${backend.megatron.global_batch_size}_\\${stage}"
  type: list
  groups:
    - type: product
      groups:
        - params:
            backend.megatron.lr: [1e-4, 5e-4, 1e-3, 2e-3]
        - params:
            backend.megatron.global_batch_size: [64, 128]
      defaults:
        stage: small_batch
      filter: "\\${oc.eval:'\\${backend.megatron.lr} <= 1e-3'}"
    - type: product
      groups:
        - params:
            backend.megatron.lr: [5e-4, 1e-3, 2e-3, 5e-3]
        - params:
            backend.megatron.global_batch_size: [256, 512, 1024]
      defaults:
        stage: large_batch
    - configs:
        - stage: production
          backend.megatron.lr: 5e-4
          backend.megatron.global_batch_size: 256
"""  # noqa: E501


def test_empty_sweep_is_one_point_without_values() -> None:
    empty: tuple[dict[str, object] | None, ...] = (None, {})
    for sweep in empty:
        (point,) = run(sweep)
        assert point == Point(0, {}, {}, frozenset(), ())


def test_readme_grid_gives_9_points_first_key_slowest() -> None:
    points = run(sweep_of(GRID))
    assert len(points) == 9
    assert [(p.values[LR], p.values[GBS]) for p in points[:4]] == [
        (1e-4, 64),
        (1e-4, 128),
        (1e-4, 256),
        (5e-4, 64),
    ]
    assert dict(points[4].values) == {
        "backend.megatron.num_layers": 20,
        "backend.megatron.hidden_size": 896,
        # carried verbatim: the escaped interpolation is the per-job step's business
        "project.name": r"experiment_\${backend.megatron.lr}_"
        r"\${backend.megatron.global_batch_size}",
        LR: 5e-4,
        GBS: 128,
    }
    assert points[4].origins[GBS] == at("grids", 0, GBS, 1)
    assert points[4].origins["project.name"] == at("base_values", "project.name")
    assert all(p.stage_keys == frozenset() and p.filters == () for p in points)


def test_readme_composable_gives_6_plus_6_plus_2() -> None:
    points = run(sweep_of(COMPOSABLE))
    assert len(points) == 14
    assert column(points, "stage") == ["small_batch"] * 6 + ["large_batch"] * 6 + ["production"] * 2
    assert [(p.values[LR], p.values[GBS]) for p in points[:3]] == [
        (1e-4, 64),
        (1e-4, 128),
        (5e-4, 64),
    ]
    assert dict(points[0].values) == {
        "project.name": r"tuning_\${backend.megatron.lr}_"
        r"\${backend.megatron.global_batch_size}_\${stage}",
        "stage": "small_batch",
        ITERS: 5000,
        LR: 1e-4,
        GBS: 64,
    }
    assert dict(points[13].values) == {
        "project.name": points[0].values["project.name"],
        "stage": "production",
        LR: 1e-3,
        GBS: 128,
        ITERS: 100000,
    }
    assert points[6].origins[LR] == at("groups", 1, "groups", 0, "params", LR, 0)
    assert points[6].origins["stage"] == at("groups", 1, "defaults", "stage")
    assert points[13].origins[ITERS] == at("groups", 2, "configs", 1, ITERS)
    assert points[0].stage_keys == {"stage", ITERS}
    assert points[13].stage_keys == {"stage", LR, GBS, ITERS}


def test_readme_multi_stage_gives_9_stable_and_9_decay() -> None:
    points = run(sweep_of(MULTI_STAGE))
    assert len(points) == 18
    assert column(points, "stage") == ["stable"] * 9 + ["decay6B"] * 9
    # The two halves sweep the same lr x gbs in the same order.
    swept = [(p.values[LR], p.values[GBS]) for p in points]
    assert swept[:9] == swept[9:]
    assert swept[:2] == [(2.5e-4, 64), (2.5e-4, 128)]
    decay = points[9]
    assert decay.values[LOAD] == r"\${sibling.stable.output_dir}/checkpoints"
    # Dotted keys beside `params` are defaults of the group: lists of maps stay values.
    assert decay.values["job.cancel_conditions"] == [
        {
            "class_name": "SlurmStateCondition",
            "job_name": r"\${sibling.stable.name}",
            "state": "FAILED",
        }
    ]
    assert decay.origins["job.start_conditions"] == at("groups", 1, "job.start_conditions")
    assert "job.start_conditions" not in points[0].values
    assert points[0].stage_keys == {"stage", ITERS}
    assert decay.stage_keys == {
        "stage",
        ITERS,
        LOAD,
        "job.start_conditions",
        "job.cancel_conditions",
    }


def test_readme_filters_attaches_the_filter_to_all_20_points() -> None:
    sweep = sweep_of(FILTERS)
    points = run(sweep)
    assert len(points) == 20
    assert [(p.values[LR], p.values[GBS]) for p in points[4:6]] == [(1e-4, 1024), (5e-4, 64)]
    assert list(points[0].values) == ["project.name", LR, GBS]
    assert sweep["filter"].startswith(r"\${oc.eval:'not (\${backend.megatron.lr}")
    expected = SweepFilter(sweep["filter"], at("filter"))
    assert all(p.filters == (expected,) for p in points)
    assert points[19].origins[GBS] == at("groups", 1, GBS, 4)


def test_readme_nested_gives_21_points_and_filters_only_the_first_group() -> None:
    points = run(sweep_of(NESTED))
    assert len(points) == 4 * 2 + 4 * 3 + 1
    filtered = [p.index for p in points if p.filters]
    assert filtered == list(range(8))
    assert points[0].filters[0].expr == r"\${oc.eval:'\${backend.megatron.lr} <= 1e-3'}"
    assert points[0].filters[0].origin == at("groups", 0, "filter")
    assert (points[7].values[LR], points[7].values[GBS]) == (2e-3, 128)
    assert (points[8].values[LR], points[8].values[GBS]) == (5e-4, 256)
    assert points[20].values["stage"] == "production"


def test_readme_origins_are_real_positions_with_the_project_loader() -> None:
    from oellm.compiler.load import load_text

    loaded = load_text(NESTED.lstrip("\n"), "exp.yaml")
    points = expand(loaded.data["sweep"], lambda path: loaded.origins.get(("sweep", *path)))
    assert points[8].origins[LR] == Origin("exp.yaml", 18, 35)
    assert points[8].origins["stage"] == Origin("exp.yaml", 22, 9)
    assert points[0].filters[0].origin == Origin("exp.yaml", 14, 7)


# --- Precedence -------------------------------------------------------------------------------


def test_precedence_base_then_defaults_outer_to_inner_then_own_values() -> None:
    sweep = {
        "base_values": {"k": "base", "a": "base", "b": "base", "c": "base"},
        "defaults": {"a": "top", "b": "top", "c": "top"},
        "groups": [
            {
                "defaults": {"b": "outer", "c": "outer"},
                "groups": [{"defaults": {"c": "inner"}, "params": {"c": ["own"]}}],
            }
        ],
    }
    (point,) = run(sweep)
    assert dict(point.values) == {"k": "base", "a": "top", "b": "outer", "c": "own"}
    assert point.origins["k"] == at("base_values", "k")
    assert point.origins["a"] == at("defaults", "a")
    assert point.origins["b"] == at("groups", 0, "defaults", "b")
    assert point.origins["c"] == at("groups", 0, "groups", 0, "params", "c", 0)


def test_inner_defaults_beat_outer_defaults_without_own_value() -> None:
    sweep = {
        "defaults": {"x": 1},
        "groups": [{"defaults": {"x": 2}, "configs": [{"y": 1}, {"x": 3}]}],
    }
    assert column(run(sweep), "x") == [2, 3]


def test_product_later_child_wins_and_children_beat_parent_defaults() -> None:
    sweep = {
        "type": "product",
        "defaults": {"sub": "parent", "p": "parent"},
        "groups": [
            {"configs": [{"sub": "a", "p": "a"}]},
            {"defaults": {"p": "b-default"}, "configs": [{"sub": "b"}]},
        ],
    }
    (point,) = run(sweep)
    # The later child's contribution, defaults included, overrides the earlier child.
    assert dict(point.values) == {"sub": "b", "p": "b-default"}
    assert point.origins["p"] == at("groups", 1, "defaults", "p")


def test_groups_without_type_are_a_product() -> None:
    # The predecessor silently gave one point when the top-level `type` was missing.
    points = run({"groups": [{"a.x": [1, 2]}, {"a.y": [3, 4]}]})
    assert [(p.values["a.x"], p.values["a.y"]) for p in points] == [(1, 3), (1, 4), (2, 3), (2, 4)]


def test_values_are_not_expanded_further() -> None:
    sweep = {
        "groups": [
            {"params": {"x.list": [[1, 2], [3]], "x.map": [{"a": [1, 2]}]}},
        ]
    }
    points = run(sweep)
    assert [dict(p.values) for p in points] == [
        {"x.list": [1, 2], "x.map": {"a": [1, 2]}},
        {"x.list": [3], "x.map": {"a": [1, 2]}},
    ]


def test_shorthand_group_is_params() -> None:
    short = run({"groups": [{"a.x": [1, 2], "stage": ["s", "t"]}]})
    full = run({"groups": [{"params": {"a.x": [1, 2], "stage": ["s", "t"]}}]})
    assert [p.values for p in short] == [p.values for p in full]
    assert short[1].origins["stage"] == at("groups", 0, "stage", 1)


def test_configs_entry_can_be_a_nested_group() -> None:
    sweep = {
        "configs": [
            {"stage": "a"},
            {"defaults": {"stage": "b"}, "params": {"lr": [1, 2]}, "filter": True},
        ]
    }
    points = run(sweep)
    assert [dict(p.values) for p in points] == [
        {"stage": "a"},
        {"stage": "b", "lr": 1},
        {"stage": "b", "lr": 2},
    ]
    assert [p.filters for p in points] == [
        (),
        (SweepFilter(True, at("configs", 1, "filter")),),
        (SweepFilter(True, at("configs", 1, "filter")),),
    ]


def test_filters_on_list_groups_apply_outermost_first() -> None:
    # The predecessor silently ignored filters on `type: list` groups.
    sweep = {
        "filter": "top",
        "type": "list",
        "groups": [
            {"type": "list", "filter": False, "groups": [{"configs": [{"a": 1}]}]},
            {
                "type": "product",
                "filter": "mid",
                "groups": [{"filter": "x", "configs": [{"b": 1}]}, {"params": {"c": [1]}}],
            },
        ],
    }
    points = run(sweep)
    assert [[f.expr for f in p.filters] for p in points] == [
        ["top", False],
        ["top", "mid", "x"],
    ]


def test_grid_format_concatenates_grids_and_accepts_a_filter() -> None:
    sweep = {
        "base_values": {"a": 0, "b": 0},
        "grids": [{"a": [1, 2]}, {"b": [3], "c": [4, 5]}],
        "filter": True,
    }
    points = run(sweep)
    assert [dict(p.values) for p in points] == [
        {"a": 1, "b": 0},
        {"a": 2, "b": 0},
        {"a": 0, "b": 3, "c": 4},
        {"a": 0, "b": 3, "c": 5},
    ]
    assert all(p.filters == (SweepFilter(True, at("filter")),) for p in points)


def test_base_values_alone_is_one_point() -> None:
    (point,) = run({"base_values": {"stage": "only", "a": 1}})
    assert dict(point.values) == {"stage": "only", "a": 1}
    assert point.stage_keys == {"stage"}


def test_points_are_read_only() -> None:
    (point,) = run({"base_values": {"a": 1}})
    with pytest.raises(TypeError):
        point.values["a"] = 2  # type: ignore[index]


# --- stage_keys: both spellings of DESIGN.md --------------------------------------------------


def test_stage_keys_for_a_list_of_two_stage_groups() -> None:
    def stage_group(stage: str, iters: int) -> dict[str, object]:
        return {
            "params": {LR: [1, 2], GBS: [3, 4]},
            "defaults": {"stage": stage, ITERS: iters},
        }

    points = run({"type": "list", "groups": [stage_group("stable", 10), stage_group("decay", 2)]})
    assert len(points) == 8
    assert all(p.stage_keys == {"stage", ITERS} for p in points)
    swept = [{k: v for k, v in p.values.items() if k not in p.stage_keys} for p in points]
    assert swept[:4] == swept[4:]


def test_stage_keys_for_a_product_of_a_grid_and_stage_configs() -> None:
    sweep = {
        "type": "product",
        "groups": [
            {"params": {LR: [1, 2], GBS: [3, 4]}},
            {
                "type": "list",
                "configs": [
                    {"stage": "stable", ITERS: 1000},
                    {"stage": "decay", ITERS: 200, LOAD: r"\${sibling.stable.output_dir}"},
                ],
            },
        ],
    }
    points = run(sweep)
    assert len(points) == 8
    assert column(points, "stage")[:2] == ["stable", "decay"]
    assert points[0].stage_keys == {"stage", ITERS}
    assert points[1].stage_keys == {"stage", ITERS, LOAD}
    assert points[1].values[LOAD] == r"\${sibling.stable.output_dir}"


def test_stage_keys_when_stage_is_swept_or_overridden() -> None:
    swept = run({"params": {"stage": ["a", "b"], ITERS: [1]}})
    assert all(p.stage_keys == {"stage"} for p in swept)
    # The winning stage decides: here the configs entry overrides the group default.
    (point,) = run({"defaults": {"stage": "d", "x": 1}, "configs": [{"stage": "e", "y": 2}]})
    assert point.stage_keys == {"stage", "y"}
    (point,) = run({"defaults": {"stage": "d", "x": 1}, "configs": [{"y": 2}]})
    assert point.stage_keys == {"stage", "x"}


# --- Errors -----------------------------------------------------------------------------------


def test_error_mixed_formats() -> None:
    message, key, hint, origin = error_of({"grids": [{"a": [1]}], "groups": [{"a": [1]}]})
    assert message == "sweep mixes the grid format ('grids') with the groups format ('groups')"
    assert key == "sweep"
    assert hint is not None and "either" in hint
    assert origin == at()


@pytest.mark.parametrize(
    ("group", "bad", "suggestion"),
    [
        ({"parms": {"a": [1]}}, "parms", "params"),
        ({"params": {"a": [1]}, "defualts": {"b": 1}}, "defualts", "defaults"),
        ({"params": {"a": [1]}, "fliter": True}, "fliter", "filter"),
        ({"config": [{"a": 1}]}, "config", "configs"),
    ],
)
def test_error_unknown_group_key_with_did_you_mean(
    group: dict[str, object], bad: str, suggestion: str
) -> None:
    message, key, hint, origin = error_of({"groups": [{"params": {"z": [1]}}, group]})
    assert message == f"unknown key '{bad}' in a sweep group"
    assert key == f"sweep.groups[1].{bad}"
    assert hint == f"did you mean '{suggestion}'?"
    assert origin == at("groups", 1, bad)


def test_error_unknown_top_level_key() -> None:
    message, key, hint, _ = error_of({"base_values": {"a": 1}, "grid": [{"a": [1]}]})
    assert (message, key, hint) == (
        "unknown key 'grid' in the sweep",
        "sweep.grid",
        "did you mean 'grids'?",
    )
    message, key, hint, _ = error_of({"grids": [{"a": [1]}], "base_value": {}})
    assert (key, hint) == ("sweep.base_value", "did you mean 'base_values'?")


def test_error_undotted_key_in_a_group_points_at_defaults() -> None:
    message, key, hint, _ = error_of({"groups": [{"stage": "x", "params": {"a": [1]}}]})
    assert message == "unknown key 'stage' in a sweep group"
    assert key == "sweep.groups[0].stage"
    assert hint == "config values for every point of a group go under 'defaults'"


def test_error_base_values_inside_a_group() -> None:
    _, key, hint, _ = error_of({"groups": [{"base_values": {}, "params": {"a": [1]}}]})
    assert key == "sweep.groups[0].base_values"
    assert hint == "base_values is only allowed at the top of sweep"


def test_error_two_kinds_in_one_group() -> None:
    message, key, _, origin = error_of({"groups": [{"params": {"a": [1]}, "configs": [{"a": 1}]}]})
    assert message == (
        "a sweep group needs exactly one of 'groups', 'params', 'configs'; "
        "it has 'params' and 'configs'"
    )
    assert key == "sweep.groups[0]"
    assert origin == at("groups", 0)


def test_error_no_kind_in_a_group() -> None:
    message, key, _, _ = error_of({"groups": [{"type": "list", "defaults": {"a": 1}}]})
    assert message.endswith("; it has none")
    assert key == "sweep.groups[0]"
    message, key, _, _ = error_of({"configs": [{"stage": "a", "filter": True}]})
    assert message.startswith("a configs entry needs exactly one of")
    assert key == "sweep.configs[0]"


def test_error_scalar_params_hints_a_list() -> None:
    message, key, hint, origin = error_of({"groups": [{"params": {LR: 1e-3}}]})
    assert message == "a swept key needs a list of alternatives, got float 0.001"
    assert key == f"sweep.groups[0].params.{LR}"
    assert hint is not None and hint.startswith("to sweep a single value write [0.001]")
    assert origin == at("groups", 0, "params", LR)
    _, key, _, _ = error_of({"grids": [{"a": "x"}]})
    assert key == "sweep.grids[0].a"
    _, key, _, _ = error_of({"groups": [{"a.b": 3}]})
    assert key == "sweep.groups[0].a.b"


@pytest.mark.parametrize(
    ("value", "hint"),
    [("prodcut", "did you mean 'product'?"), ("lists", "did you mean 'list'?"), (None, None)],
)
def test_error_bad_type(value: object, hint: str | None) -> None:
    message, key, got_hint, origin = error_of(
        {"type": "list", "groups": [{"type": value, "params": {"a": [1]}}]}
    )
    assert message == f"unknown group type {value!r}; expected 'product' or 'list'"
    assert key == "sweep.groups[0].type"
    assert got_hint == hint
    assert origin == at("groups", 0, "type")


@pytest.mark.parametrize("value", [1, None, ["x"], {"a": 1}])
def test_error_filter_must_be_bool_or_string(value: object) -> None:
    message, key, _, origin = error_of({"groups": [{"params": {"a": [1]}, "filter": value}]})
    assert message.startswith("a filter must be true, false or an interpolation string, got ")
    assert key == "sweep.groups[0].filter"
    assert origin == at("groups", 0, "filter")


@pytest.mark.parametrize(
    ("sweep", "message", "key"),
    [
        (["a"], "sweep must be a mapping", "sweep"),
        ({"groups": []}, "groups is an empty list", "sweep.groups"),
        ({"groups": {"a": [1]}}, "groups must be a list, got a mapping", "sweep.groups"),
        ({"groups": [[1]]}, "a sweep group must be a mapping, got a list", "sweep.groups[0]"),
        ({"groups": [{}]}, "a sweep group is empty", "sweep.groups[0]"),
        ({"params": {}}, "params needs at least one swept key", "sweep.params"),
        ({"params": {"a": []}}, "a swept key needs at least one alternative", "sweep.params.a"),
        ({"configs": ["x"]}, "a configs entry must be a mapping, got str 'x'", "sweep.configs[0]"),
        ({"grids": [{}]}, "a grid needs at least one swept key", "sweep.grids[0]"),
        ({"base_values": [1]}, "base_values must be a mapping, got a list", "sweep.base_values"),
        ({"configs": [{"a..b": 1}]}, "'a..b' is not a config key", "sweep.configs[0].a..b"),
        ({"configs": [{3: 1}]}, "3 is not a config key", "sweep.configs[0].3"),
    ],
)
def test_error_shapes(sweep: Any, message: str, key: str) -> None:
    got_message, got_key, _, _ = error_of(sweep)
    assert (got_message, got_key) == (message, key)


def test_error_dotted_key_set_twice() -> None:
    message, key, _, _ = error_of({"defaults": {"a.b": 1}, "a.b": 2, "params": {"c": [1]}})
    assert message == "this key is set both here and under defaults"
    assert key == "sweep.a.b"


# --- The algebra, by property -----------------------------------------------------------------

KEYS = st.sampled_from(["a.x", "a.y", "b", "stage"])
# Small leaves keep products small: a leaf has at most 4 points.
PARAMS = st.dictionaries(
    KEYS, st.lists(st.integers(0, 9), min_size=1, max_size=2), min_size=1, max_size=2
)
CONFIGS = st.lists(st.dictionaries(KEYS, st.integers(0, 9), max_size=2), min_size=1, max_size=3)
LEAF = PARAMS.map(lambda p: {"params": p}) | CONFIGS.map(lambda c: {"configs": c})


def _node(kind: str, children: list[dict[str, object]]) -> dict[str, object]:
    return {"type": kind, "groups": children}


def trees(max_leaves: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        LEAF,
        lambda inner: st.builds(
            _node, st.sampled_from(["product", "list"]), st.lists(inner, min_size=1, max_size=3)
        ),
        max_leaves=max_leaves,
    )


TREE = trees(5)


def expected_count(group: Mapping[str, Any]) -> int:
    if "params" in group:
        return math.prod(len(v) for v in group["params"].values())
    if "configs" in group:
        return len(group["configs"])
    counts = [expected_count(child) for child in group["groups"]]
    return math.prod(counts) if group["type"] == "product" else sum(counts)


@settings(max_examples=150, deadline=None)
@given(TREE)
def test_count_indices_and_determinism(tree: dict[str, Any]) -> None:
    points = run(tree)
    assert len(points) == expected_count(tree)
    assert [p.index for p in points] == list(range(len(points)))
    assert run(tree) == points


@settings(max_examples=150, deadline=None)
@given(st.lists(trees(2), min_size=1, max_size=3))
def test_list_is_concatenation_and_product_is_ordered_merge(children: list[Any]) -> None:
    alone = [[dict(p.values) for p in run(child)] for child in children]
    listed = run({"type": "list", "groups": children})
    assert [dict(p.values) for p in listed] == [v for values in alone for v in values]
    multiplied = run({"type": "product", "groups": children})
    assert len(multiplied) == math.prod(len(values) for values in alone)
    merged = [
        {k: v for values in combo for k, v in values.items()} for combo in itertools.product(*alone)
    ]
    assert [dict(p.values) for p in multiplied] == merged


# --- list_composition: keys that accumulate across the layers of a point ---------------------


def test_list_composition_accumulates_across_a_product() -> None:
    points = run(
        sweep_of(
            """
            sweep:
              type: product
              list_composition: [basic]
              groups:
                - configs: [{basic: integrate_a0}, {basic: integrate_a1}]
                - configs: [{basic: integrate_b0}]
            """
        )
    )
    assert [p.values["basic"] for p in points] == [
        ["integrate_a0", "integrate_b0"],
        ["integrate_a1", "integrate_b0"],
    ]


def test_list_composition_flattens_lists_and_takes_defaults_in() -> None:
    points = run(
        sweep_of(
            """
            sweep:
              type: product
              list_composition: [k]
              groups:
                - {configs: [{k: [a, b]}]}
                - {defaults: {k: default}, configs: [{k: c}]}
            """
        )
    )
    assert [p.values["k"] for p in points] == [["a", "b", "default", "c"]]


def test_list_composition_keeps_one_value_as_written_and_other_keys_override() -> None:
    points = run(
        sweep_of(
            """
            sweep:
              type: list
              list_composition: [k]
              groups:
                - configs: [{k: a, other: 1}]
                - configs: [{k: b, other: 2}]
            """
        )
    )
    assert [(p.values["k"], p.values["other"]) for p in points] == [("a", 1), ("b", 2)]


def test_list_composition_must_list_keys() -> None:
    with pytest.raises(ConfigError, match="list_composition lists keys"):
        run({"type": "product", "list_composition": [1], "groups": [{"configs": [{"a": 1}]}]})
