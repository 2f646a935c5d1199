"""The authoring schemas: every shipped config file, as written, is valid for an editor, and
the mistakes an editor should catch are caught."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from ruamel.yaml import YAML

from oellm.compiler.authoring import EXPERIMENT, GROUPS, group_file
from oellm.compiler.load import load_text
from tests.helpers import REPO, compile_file, write

CONFIG = REPO / "config"
SCHEMAS = REPO / "schemas"
FILES = sorted(CONFIG.rglob("*.yaml"))
MODELINE = "# yaml-language-server: $schema="


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_authoring_schema", REPO / "tools" / "gen_authoring_schema.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _raw(text: str) -> Any:
    """The file as an editor sees it: YAML as written, nothing composed or resolved."""
    return json.loads(json.dumps(YAML(typ="rt").load(text), default=str))


def _schema_named(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(MODELINE), f"{path}: the first line is not the modeline"
    target = (path.parent / first.removeprefix(MODELINE)).resolve()
    assert target.parent == SCHEMAS.resolve() and target.is_file(), target
    return target.name


def test_committed_schemas_are_current() -> None:
    assert _generator().stale() == []


def test_a_changed_experiment_schema_makes_them_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = _generator()
    for path in SCHEMAS.glob("*.json"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(generator, "SCHEMAS", tmp_path)
    assert generator.stale() == []
    schema = json.loads((tmp_path / "experiment.schema.json").read_text())
    schema["properties"]["vars"]["description"] = "changed"
    (tmp_path / "experiment.schema.json").write_text(json.dumps(schema))
    assert tmp_path / EXPERIMENT in generator.stale()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CONFIG)) for p in FILES])
def test_every_shipped_file_names_its_schema_and_is_valid(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    group = path.relative_to(CONFIG).parts[0]
    in_group = group in GROUPS and load_text(text, str(path)).package is None
    name = _schema_named(path)
    assert name == (group_file(group) if in_group else EXPERIMENT)
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in _validator(name).iter_errors(_raw(text))
    ]
    assert errors == []


def test_the_resolved_schema_would_have_flagged_the_examples() -> None:
    """Why the authoring schema exists: the resolved one rejects the files as written."""
    from oellm.compiler.validate import experiment_validator

    validator = experiment_validator()
    raw = _raw((CONFIG / "experiments" / "clusters" / "lumi.yaml").read_text(encoding="utf-8"))
    assert len(list(validator.iter_errors(raw))) >= 5
    assert list(_validator(EXPERIMENT).iter_errors(raw)) == []


def test_package_header_still_read_below_the_modeline(tmp_path: Path) -> None:
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        if "@package _global_" in text.split("\n\n", 1)[0]:
            assert load_text(text, str(path)).package == "_global_", path
    # And composition honours it: a group file placed at the root by its header.
    write(
        tmp_path / "slurm" / "mine.yaml",
        """
        # yaml-language-server: $schema=../../schemas/experiment.authoring.schema.json
        # @package _global_
        vars: {from_group: hello}
        slurm: {template: base.sbatch.j2, sbatch: {time: "00:10:00"}}
        """,
    )
    exp = write(
        tmp_path / "exp.yaml",
        """
        # yaml-language-server: $schema=schemas/experiment.authoring.schema.json
        # @package _global_
        defaults:
          - /slurm: mine
        project: {name: hdr}
        backend: {bash: {command: "echo ${vars.from_group}"}}
        """,
    )
    bundle = compile_file(exp, config_dirs=[tmp_path])
    assert "echo hello" in bundle.files["jobs/hdr.sbatch"].decode()


def _all(errors: list[ValidationError]) -> list[ValidationError]:
    out: list[ValidationError] = []
    for error in errors:
        out.append(error)
        out.extend(_all(list(error.context or [])))
    return out


@pytest.mark.parametrize(
    ("text", "schema", "where", "words"),
    [
        ("projcet: {name: x}\n", EXPERIMENT, [], "'projcet' was unexpected"),
        ("slurm:\n  sbtach: {time: '1:00:00'}\n", EXPERIMENT, ["slurm"], "'sbtach' was unexpected"),
        ("sbtach: {time: '1:00:00'}\n", group_file("slurm"), [], "'sbtach' was unexpected"),
        (
            "backend:\n  megatron: {lerning_rate: 1.0e-4}\n",
            EXPERIMENT,
            ["backend", "megatron"],
            "'lerning_rate' was unexpected",
        ),
        ("backend:\n  megatron: {lr: fast}\n", EXPERIMENT, ["backend", "megatron", "lr"], ""),
        ("slurm: {array: sometimes}\n", EXPERIMENT, ["slurm", "array"], ""),
        ("defaults: {slurm: lumi}\n", EXPERIMENT, ["defaults"], "is not of type 'array'"),
    ],
)
def test_deliberate_mistakes_are_reported(
    text: str, schema: str, where: list[str], words: str
) -> None:
    errors = _all(list(_validator(schema).iter_errors(_raw(text))))
    assert any(list(e.absolute_path) == where and words in e.message for e in errors), [
        (list(e.absolute_path), e.message) for e in errors
    ]


@pytest.mark.parametrize(
    "text",
    [
        "backend:\n  megatron: {lr: '${vars.lr}', train_iters: \"${oc.eval:'2 * 3'}\"}\n",
        "slurm: {array: '${vars.a}', gpus_per_node: '???'}\n",
        "job: {chain_repeat: '\\${sibling.stable.job.chain_repeat}'}\n",
        "defaults:\n  - /slurm: lumi\n  - override /container: none\n  - _self_\n",
    ],
)
def test_interpolations_and_defaults_are_accepted(text: str) -> None:
    assert list(_validator(EXPERIMENT).iter_errors(_raw(text))) == []
