"""Classes of a Megatron-LM checkout found by name, with `ast`: a module's imports followed to
the module that defines the class, so that `oellm megatron-args` can read the config
dataclasses Megatron turns into argument groups. Nothing of the checkout is imported or run;
only an enum of Python's standard library (`signal.Signals`) is imported, to list its members.
"""

from __future__ import annotations

import ast
import enum
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ENUM_BASES = {"Enum", "IntEnum", "StrEnum", "Flag", "IntFlag"}
_DEPTH = 20  # re-exports followed before a name counts as not found


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. megatron.training.config
    path: Path
    tree: ast.Module
    package: str  # what a relative import of level 1 starts from
    imports: dict[str, str]  # local name -> dotted name it stands for


@dataclass(frozen=True)
class ClassRef:
    module: Module
    node: ast.ClassDef

    @property
    def name(self) -> str:
        return f"{self.module.name}.{self.node.name}"


class Modules:
    """The Python modules of one checkout, parsed on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._parsed: dict[str, Module | None] = {}

    def module(self, name: str) -> Module | None:
        if name not in self._parsed:
            self._parsed[name] = self._load(name)
        return self._parsed[name]

    def _load(self, name: str) -> Module | None:
        base = self.root.joinpath(*name.split("."))
        # a/b/c.py is in package a.b; a/b/c/__init__.py is package a.b.c itself.
        candidates = [(base.with_suffix(".py"), name.rpartition(".")[0])]
        candidates.append((base / "__init__.py", name))
        for path, package in candidates:
            if path.is_file():
                try:
                    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
                except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                    return None
                return Module(name, path, tree, package, imports_of(tree, package))
        return None

    def resolve(self, module: Module, node: ast.expr) -> ClassRef | str | None:
        """The class `node` names in `module`: a ClassRef in the checkout, the dotted name
        of one outside it, or None when `node` is not a name."""
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head in module.imports:
            target = module.imports[head] + ("." + rest if rest else "")
        elif not rest and _top_class(module.tree, head) is not None:
            target = f"{module.name}.{head}"
        else:
            return dotted
        return self.find(target) or target

    def find(self, dotted: str, depth: int = 0) -> ClassRef | None:
        """The class a dotted name stands for, following re-exports (`from .x import Y`)."""
        module_name, _, name = dotted.rpartition(".")
        module = self.module(module_name) if module_name else None
        if module is None or depth > _DEPTH:
            return None
        node = _top_class(module.tree, name)
        if node is not None:
            return ClassRef(module, node)
        if name in module.imports and module.imports[name] != dotted:
            return self.find(module.imports[name], depth + 1)
        return None

    def enum_members(self, ref: ClassRef | str, depth: int = 0) -> list[str] | None:
        """The member names of an enum class, or None if `ref` is no enum this reader knows."""
        if isinstance(ref, str):
            return _stdlib_enum_members(ref)
        if depth > _DEPTH:
            return None
        for base in ref.node.bases:
            found = self.resolve(ref.module, base)
            dotted = _dotted(base) or ""
            if isinstance(found, str) and dotted.rpartition(".")[2] in _ENUM_BASES:
                return _members(ref.node)
            if isinstance(found, ClassRef) and self.enum_members(found, depth + 1) is not None:
                return _members(ref.node)
        return None


def imports_of(tree: ast.Module, package: str) -> dict[str, str]:
    """Every import of the module, also those inside functions (Megatron imports its config
    classes where it builds their group)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    head = alias.name.partition(".")[0]
                    names[head] = head
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module or "", node.level, package)
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{source}.{alias.name}"
    return names


def _absolute(module: str, level: int, package: str) -> str:
    if level == 0:
        return module
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, module] if module else base)


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _top_class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None


def _members(node: ast.ClassDef) -> list[str]:
    names: list[str] = []
    for statement in node.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name) and not target.id.startswith("_"):
                names.append(target.id)
    return names


def _stdlib_enum_members(dotted: str) -> list[str] | None:
    module_name, _, name = dotted.rpartition(".")
    if module_name.partition(".")[0] not in sys.stdlib_module_names:
        return None
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    if isinstance(found, type) and issubclass(found, enum.Enum):
        return [member.name for member in found]
    return None


def literal(node: ast.expr | None, otherwise: Any) -> Any:
    """A literal's value; a computed one (a call, a name) is `otherwise`."""
    if node is None:
        return otherwise
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return otherwise
