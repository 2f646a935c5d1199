"""The map cannot drift: every folder DESIGN.md names exists, and the import boundaries hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

DESIGN_FOLDERS = [
    "compiler",
    "reconciler",
    "lockfile",
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


@pytest.mark.parametrize("path", sorted((REPO / "lockfile").glob("*.py")), ids=lambda p: p.name)
def test_the_lockfile_imports_neither_half(path: Path) -> None:
    """Both halves depend on the contract; it depends on neither (nor on the shell)."""
    found = imports(path)
    assert not {n for n in found if "compiler" in n or "reconciler" in n}
    assert not {n for n in found if n.split(".")[0] in ("subprocess", "oellm.shell")}


HALVES = sorted(p for folder in ("compiler", "reconciler") for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", HALVES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_only_the_lockfile_codec_reads_or_checks_the_lockfile_schema(path: Path) -> None:
    """One validator and one mapping for plan.lock.json (oellm.lockfile): neither half
    keeps a schema check of its own."""
    assert "lock.schema.json" not in path.read_text(encoding="utf-8")


def test_the_reconciler_reads_the_bundle_through_the_codec() -> None:
    found = imports(REPO / "reconciler" / "bundle.py")
    assert "oellm.lockfile.codec" in found
    assert not {n for n in found if n.split(".")[0] in ("jsonschema", "jsonschema_rs", "json")}


# The reconciler's functional core (DESIGN: "decide ... pure, exhaustively tested") and the
# modules it reads; none of them may reach the shell around it, directly or through another.
PURE_RECONCILER = [
    "decide",
    "decide_job",
    "restart",
    "current",
    "chain",
    "events",
    "conditions",
    "policy",
    "actions",
    "recover",
    "model",
]
# The reconciler's shell, and the standard modules that do I/O. (`pathlib` is allowed: the
# Scheduler protocol names paths; reading one is what `os`/`open` would be needed for.)
SHELL = {
    *(
        f"oellm.reconciler.{name}"
        for name in ("observe", "records", "bundle", "logs", "lock", "identity", "submit")
    ),
    *(f"oellm.reconciler.{name}" for name in ("act", "reconcile", "folders", "codec")),
    "oellm.reconciler.codec_quick",
    "oellm.reconciler.lock_file",
    "oellm.reconciler.lock_takeover",
    *(f"oellm.reconciler.{name}" for name in ("record_file", "cancel_batches")),
    *(f"oellm.reconciler.{name}" for name in ("session", "cancel", "changes", "event_steps")),
    "oellm.reconciler.schedulers.slurm",
    "oellm.reconciler.schedulers.local",
    "oellm.shell",
}
IO_MODULES = {"subprocess", "os", "shutil", "tempfile", "socket", "signal", "fcntl", "io"}


def reconciler_source(module: str) -> Path | None:
    """The file of `oellm.reconciler.<x>` (a module or a package), None for other names."""
    if not module.startswith("oellm.reconciler."):
        return None
    relative = REPO / "reconciler" / module.removeprefix("oellm.reconciler.").replace(".", "/")
    for path in (relative.with_suffix(".py"), relative / "__init__.py"):
        if path.is_file():
            return path
    return None


def absolute_imports(path: Path) -> set[str]:
    """A reconciler module's imports as absolute names (`.model` is oellm.reconciler.model;
    `from .schedulers import slurm` also names oellm.reconciler.schedulers.slurm)."""
    package = "oellm." + ".".join(path.relative_to(REPO).parent.parts)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("name", PURE_RECONCILER)
def test_the_reconcilers_core_never_reaches_its_shell(name: str) -> None:
    """`decide` and what it reads import only pure modules, directly or through each other:
    no files, no processes, no SLURM (HOUSE_STYLE 5)."""
    seen: set[str] = set()
    todo = [f"oellm.reconciler.{name}"]
    while todo:
        module = todo.pop()
        path = reconciler_source(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        found = absolute_imports(path)
        bad = sorted(n for n in found if n in SHELL or n.split(".")[0] in IO_MODULES)
        assert not bad, f"{module} imports {bad}"
        todo += found
