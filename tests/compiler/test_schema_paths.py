"""A config made from a model config is judged by its changed values alone
(`compiler/schema_paths.py`, `Validator`): the same verdict as the whole config's, for values
of every type at paths under `if`/`then`, `$ref`, `allOf` and the Megatron schema; and a path
under a keyword that judges a mapping by its values is validated whole."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oellm.compiler import validate
from oellm.compiler.errors import ConfigError
from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.resolve import JobConfig
from oellm.compiler.schema_paths import Unsupported, leaf_schemas
from oellm.compiler.tree import KeyPath
from tests.helpers import EXAMPLES

pytest.importorskip("jsonschema_rs")


@dataclass(eq=False)
class Model:
    """A `leaves.Made`: a model config and where the configs made from it differ."""

    model: dict[str, Any]
    paths: list[KeyPath]


def _first_config(example: str) -> dict[str, Any]:
    jobs: list[JobConfig] = []
    compile_bundle(
        CompileRequest(experiment=EXAMPLES / example, bundle_dir=Path("/nonexistent")),
        on_job=lambda name, job: jobs.append(job),
    )
    return jobs[0].config


def _with(model: dict[str, Any], paths: list[KeyPath], values: list[Any]) -> dict[str, Any]:
    config = copy.deepcopy(model)
    for path, value in zip(paths, values, strict=True):
        node: Any = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return config


VALUES = [
    0,
    1,
    -1,
    2,
    3.5,
    -0.0,
    True,
    False,
    None,
    "",
    "x",
    "plain",
    "per_gpu",
    "slurm",
    "a b",
    "???",
    "1e-3",
    10**30,
    "é",
    "reconciler",
    "FileExistsCondition",
    "none",
]


def _paths(config: dict[str, Any]) -> list[KeyPath]:
    """Paths of the config's leaves that hold text, numbers, true/false or null."""
    found: list[KeyPath] = []

    def walk(node: Any, path: KeyPath) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))
        else:
            found.append(path)

    walk(config, ())
    return found


@pytest.mark.parametrize("example", ["demo.yaml", "megatron_tiny.yaml"])
def test_the_verdict_is_the_whole_configs(example: str) -> None:
    model = _first_config(example)
    validator = validate.Validator()
    whole = validate._Compiled.load(validate.SCHEMAS)
    assert whole is not None
    leaves = _paths(model)
    rng = random.Random(15)
    narrowed = judged = 0
    for _ in range(400):
        paths = rng.sample(leaves, rng.randint(1, 4))
        made = Model(model, paths)
        for _ in range(5):
            values = [rng.choice(VALUES) for _ in paths]
            expected = whole.is_valid(_with(model, paths, values))
            checks = validator._leaf_checks(made)  # type: ignore[arg-type]
            if checks is not None:
                narrowed += 1
                assert validator._passes(made, values) == expected, (paths, values)  # type: ignore[arg-type]
                judged += expected is False
    # The cases reach both verdicts through the narrowed path.
    assert narrowed > 1000 and judged > 100


def test_an_invalid_value_is_reported_as_before(tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "project: {name: p}\n"
        'job: {name: "j_${vars.n}", chain_repeat: "${vars.n}"}\n'
        'backend: {bash: {command: "echo"}}\n'
        "vars: {n: 1}\n"
        "sweep: {grids: [{vars.n: [1, 2, 0, 3]}]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        compile_bundle(CompileRequest(experiment=exp))
    assert "job.chain_repeat: 0 is too small (minimum 1)" in str(caught.value)


def _resources() -> dict[str, Any]:
    return {
        "root.json": {
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "b": {"$ref": "#/$defs/b"},
                "c": {"oneOf": [{"type": "object"}, {"type": "null"}]},
                "d": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
                "e": {
                    "type": "object",
                    "properties": {"kind": {"enum": ["k", "l"]}, "v": {"type": "string"}},
                    "allOf": [
                        {
                            "if": {"properties": {"kind": {"const": "k"}}},
                            "then": {"properties": {"v": {"minLength": 2}}},
                            "else": {"properties": {"v": {"maxLength": 1}}},
                        }
                    ],
                },
            },
            "additionalProperties": {"type": "number"},
            "$defs": {"b": {"type": "object", "additionalProperties": {"$ref": "other.json"}}},
        },
        "other.json": {"type": "string", "pattern": "^o"},
    }


def _accepts(location: tuple[str, str], value: Any) -> bool:
    # The only `if` here: kind == "k".
    assert location == ("root.json", "/properties/e/allOf/0/if")
    return bool(value.get("kind") == "k")


MODEL = {
    "a": {"x": 1},
    "b": {"y": "o"},
    "c": {"z": 1},
    "d": ["p", "q"],
    "e": {"kind": "k", "v": "vv"},
    "f": 2,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("a", "x"), [("root.json", "/properties/a/properties/x")]),
        (("b", "y"), [("root.json", "/$defs/b/additionalProperties")]),
        (("f",), [("root.json", "/additionalProperties")]),
        (
            ("e", "v"),
            [
                ("root.json", "/properties/e/properties/v"),
                ("root.json", "/properties/e/allOf/0/then/properties/v"),
            ],
        ),
    ],
)
def test_the_schemas_that_judge_a_leaf(path: KeyPath, expected: list[tuple[str, str]]) -> None:
    found = leaf_schemas(_resources(), "root.json", MODEL, path, [path], _accepts)
    assert found == expected


@pytest.mark.parametrize(
    ("path", "changed"),
    [
        (("c", "z"), [("c", "z")]),  # under oneOf: the mapping's verdict may change
        (("d", 0), [("d", 0)]),  # uniqueItems: the list's verdict may change
        (("e", "v"), [("e", "v"), ("e", "kind")]),  # the `if` reads a changed value
    ],
)
def test_a_value_that_can_change_a_mappings_verdict_is_unsupported(
    path: KeyPath, changed: list[KeyPath]
) -> None:
    with pytest.raises(Unsupported):
        leaf_schemas(_resources(), "root.json", MODEL, path, changed, _accepts)


def test_an_id_below_a_files_root_is_unsupported() -> None:
    # Its `$ref`s resolve against the `$id`, not the file: taken as unsupported, not guessed.
    resources = _resources()
    resources["root.json"]["properties"]["a"]["$id"] = "elsewhere.json"
    with pytest.raises(Unsupported, match=r"\$id"):
        leaf_schemas(resources, "root.json", MODEL, ("a", "x"), [("a", "x")], _accepts)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("job", "restart", "on", 1), "TIMEOUT"),  # uniqueItems: now the same as item 0
        (("job", "restart", "on", 1), "PREEMPTED"),
        (("backend", "kind"), "bash"),  # an `if` on the kind: the megatron branch no longer holds
        (("job", "dependency"), "never"),  # an enum at the leaf
    ],
)
def test_values_that_change_a_mappings_verdict_agree_with_the_whole_config(
    path: KeyPath, value: Any
) -> None:
    model = _first_config("megatron_tiny.yaml")
    model["job"]["restart"] = {"on": ["TIMEOUT", "NODE_FAIL"], "max_attempts": 3}
    whole = validate._Compiled.load(validate.SCHEMAS)
    assert whole is not None and whole.is_valid(model)
    validator = validate.Validator()
    made = Model(model, [path])
    expected = whole.is_valid(_with(model, [path], [value]))
    # Unsupported (None): validated whole; else the narrowed verdict is the whole one.
    narrowed = validator._passes(made, [value])  # type: ignore[arg-type]
    assert narrowed == expected or (validator._leaves[made] is None and not narrowed)  # type: ignore[index]
