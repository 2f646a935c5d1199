"""The map cannot drift: every folder DESIGN.md names exists, and the import boundaries hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

DESIGN_FOLDERS = [
    "compiler",
    "reconciler",
    "schemas",
    "templates",
    "config",
    "container",
    "tests",
    "benchmarks",
]
PIPELINE_STEPS = [
    "load",
    "compose",
    "interpolate",
    "validate",
    "expand",
    "resolve",
    "render",
    "write",
]


@pytest.mark.parametrize("folder", DESIGN_FOLDERS)
def test_design_folders_exist(folder: str) -> None:
    assert (REPO / folder).is_dir()


@pytest.mark.parametrize("step", PIPELINE_STEPS)
def test_one_module_per_pipeline_step(step: str) -> None:
    assert (REPO / "compiler" / f"{step}.py").is_file()


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "compiler").glob("*.py")), ids=lambda p: p.name)
def test_compiler_is_pure(path: Path) -> None:
    found = imports(path)
    assert not {n for n in found if n.split(".")[0] == "subprocess"}
    assert not {n for n in found if "reconciler" in n}


@pytest.mark.parametrize("path", sorted((REPO / "reconciler").rglob("*.py")), ids=lambda p: p.name)
def test_reconciler_reads_only_the_bundle(path: Path) -> None:
    found = imports(path)
    assert not {n for n in found if n.startswith("ruamel") or "compiler" in n}
