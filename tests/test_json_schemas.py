"""`status --json`, `reconcile --json` and `diff --json` are versioned (`schema_version: 1`)
and documented by schemas/status.schema.json, reconcile.schema.json and diff.schema.json: real
output of each, on the local scheduler, validates against its schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.helpers import REPO, write
from tests.reconciler.local_cli import Cli, cli

__all__ = ["cli"]

EXP = """
project: {name: js}
job: {name: "js_${vars.i}", chain_repeat: %d}
vars: {i: 0}
backend: {bash: {command: "echo run; exit ${vars.i}"}}
sweep: {params: {vars.i: [0, 1]}}
"""


def valid(name: str, document: Any) -> None:
    schema = json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(document)]
    assert errors == [], errors
    assert document["schema_version"] == 1


@pytest.mark.parametrize("chain", [1, 2])
def test_real_output_validates(cli: Cli, tmp_path: Path, chain: int) -> None:
    write(tmp_path / "e.yaml", EXP % chain)
    assert cli("compile", "e.yaml", "-o", "b")[0] == 0
    valid("status", json.loads(cli("status", "b", "--json")[1]))
    valid("reconcile", json.loads(cli("reconcile", "b", "--dry-run", "--json")[1]))
    valid("reconcile", json.loads(cli("reconcile", "b", "--json")[1]))
    cli.until("b", {"COMPLETED", "FAILED"})
    status = json.loads(cli("status", "b", "--json")[1])
    valid("status", status)
    assert {j["state"] for j in status["bundles"][0]["jobs"]} == {"COMPLETED", "FAILED"}
    write(tmp_path / "e.yaml", (EXP % chain).replace("echo run", "echo again"))
    assert cli("compile", "e.yaml", "-o", "b2")[0] == 0
    code, out, _ = cli("diff", "b", "b2", "--json")
    assert code == 1
    valid("diff", json.loads(out))


def test_a_wrong_document_is_refused() -> None:
    with pytest.raises(AssertionError):
        valid("status", {"schema_version": 1, "bundles": [{"bundle": "b"}]})
