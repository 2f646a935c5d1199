"""Megatron-LM's arguments read from its source with `ast`: every `add_argument(...)` call of
the argument parser module, as the entries of the argument table (tools/megatron-args.json's
format). The checkout's code is parsed, never imported or run, so any fork can be read on a
login node without its dependencies.

Newer Megatron builds some groups from config dataclasses
(`ArgumentGroupFactory(TransformerConfig, exclude=[...])`): their classes are found through the
checkout's imports and their fields read as the factory would add them (megatron_dataclass.py).

What a static read cannot know is left out and listed: arguments whose action or nargs the
table has no form for (`append`, `count`, `nargs='?'`), and factory groups whose dataclass is
not in the checkout.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.megatron_dataclass import field_calls
from oellm.megatron_modules import ClassRef, Module, Modules, imports_of, literal

# Where the parser lives, newest layout first.
PARSER_FILES = ("megatron/training/arguments.py", "megatron/arguments.py")
_TYPES = {"int", "float", "str", "bool"}


@dataclass(frozen=True)
class Skipped:
    line: int
    what: str  # the option strings
    why: str
    file: str = ""  # when not the parser module: the dataclass's module


@dataclass(frozen=True)
class Group:
    """An argument group built from a config dataclass, and how many arguments it gave."""

    line: int
    dataclass: str  # its dotted name
    arguments: int


@dataclass
class ArgumentTable:
    arguments: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    factories: list[Skipped] = field(default_factory=list)  # dataclass groups not read


class NotAParser(Exception):
    """The path holds no Megatron argument parser this reader can find or parse."""


def parser_file(path: Path) -> Path:
    """The argument parser module of a checkout (or `path` itself, when it is that file)."""
    if path.is_file():
        return path
    for relative in PARSER_FILES:
        if (path / relative).is_file():
            return path / relative
    raise NotAParser(
        f"{path} holds none of {', '.join(PARSER_FILES)}: is it a Megatron-LM checkout?"
    )


def checkout_root(parser: Path) -> Path:
    """The folder the parser module's `megatron.` imports are found in."""
    for relative in PARSER_FILES:
        parts = Path(relative).parts
        if parser.parts[-len(parts) :] == parts:
            return parser.parents[len(parts) - 1]
    return parser.parent


def read_checkout(path: Path) -> tuple[Path, ArgumentTable]:
    """The parser module of a checkout (or that file itself) and its argument table."""
    parser = parser_file(path)
    try:
        source = parser.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NotAParser(f"{parser}: cannot read it: {exc}") from None
    return parser, read_table(source, str(parser), Modules(checkout_root(parser)))


def read_table(
    source: str, filename: str = "<arguments>", modules: Modules | None = None
) -> ArgumentTable:
    """The table of a parser module; with `modules` (the checkout), the groups it builds from
    dataclasses too."""
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 1
        raise NotAParser(f"{filename}:{line}: not Python this reader can parse") from None
    table = ArgumentTable()
    seen: dict[str, str] = {}  # dest or flag -> where it was added

    def add(line: int, shown: str, entry: dict[str, Any] | str, file: str = "") -> bool:
        if isinstance(entry, str):
            table.skipped.append(Skipped(line, shown, entry, file))
            return False
        names = [entry["dest"], *entry["option_strings"]]
        earlier = next((seen[name] for name in names if name in seen), None)
        if earlier is not None:
            why = f"dest or flag already added {earlier}"
            table.skipped.append(Skipped(line, shown, why, file))
            return False
        for name in names:
            seen[name] = f"at {file}:{line}" if file else f"on line {line}"
        table.arguments.append(entry)
        return True

    parser_module = _parser_module(tree, filename, modules)
    for call in _calls(tree):
        if _name_of(call.func) == "ArgumentGroupFactory":
            _read_group(tree, call, modules, parser_module, table, add)
            continue
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument"):
            continue
        options = [
            a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
        add(call.lineno, "/".join(options) or "(positional)", _entry(call, options))
    table.arguments.sort(key=lambda e: e["dest"])
    return table


def _parser_module(tree: ast.Module, filename: str, modules: Modules | None) -> Module | None:
    if modules is None:
        return None
    path = Path(filename)
    try:
        dotted = ".".join(path.with_suffix("").relative_to(modules.root).parts)
    except ValueError:
        dotted = path.stem
    package = dotted.rpartition(".")[0]
    return Module(dotted, path, tree, package, imports_of(tree, package))


def _read_group(
    tree: ast.Module,
    call: ast.Call,
    modules: Modules | None,
    parser_module: Module | None,
    table: ArgumentTable,
    add: Callable[[int, str, dict[str, Any] | str, str], bool],
) -> None:
    """The arguments `ArgumentGroupFactory(Config, exclude=[...])` adds, at its line."""
    shown = ast.unparse(call.args[0]) if call.args else "(no dataclass)"
    exclude = _exclude(tree, call)
    found = None
    if modules is not None and parser_module is not None and call.args:
        found = modules.resolve(parser_module, call.args[0])
    if modules is None or not isinstance(found, ClassRef):
        table.factories.append(
            Skipped(
                call.lineno, shown, "its dataclass is not found in the checkout or does not parse"
            )
        )
        return
    if not isinstance(exclude, (list, tuple, set)):
        table.factories.append(Skipped(call.lineno, shown, "its exclude list is computed"))
        return
    count = 0
    for item in field_calls(modules, found, {str(name) for name in exclude}):
        file = str(item.field.module.path)
        shown_field = (
            f"{'/'.join(item.options) or item.field.name} ({found.node.name}.{item.field.name})"
        )
        entry = item.why if item.call is None else _entry(item.call, item.options)
        count += add(item.field.line, shown_field, entry, file)
    table.groups.append(Group(call.lineno, found.name, count))


def _exclude(tree: ast.Module, call: ast.Call) -> Any:
    """The factory's `exclude` names: a literal list, or a variable the enclosing function
    sets to one (and extends with literals) before the call; None when computed."""
    node = next((k.value for k in call.keywords if k.arg == "exclude"), None)
    if node is None:
        return []
    if not isinstance(node, ast.Name):
        return literal(node, None)
    scopes = [
        f
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        and f.lineno <= call.lineno <= (f.end_lineno or f.lineno)
    ]
    scope: ast.AST = max(scopes, key=lambda f: f.lineno) if scopes else tree
    value: Any = None
    steps = [s for s in ast.walk(scope) if isinstance(s, ast.stmt) and s.lineno < call.lineno]
    for step in sorted(steps, key=lambda s: s.lineno):
        if isinstance(step, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == node.id for t in step.targets
        ):
            value = literal(step.value, None)
        elif (
            isinstance(step, ast.AugAssign)
            and isinstance(step.target, ast.Name)
            and step.target.id == node.id
        ):
            added = literal(step.value, None)
            value = None if value is None or added is None else [*value, *added]
        elif (
            isinstance(step, ast.Expr)
            and isinstance(step.value, ast.Call)
            and isinstance(step.value.func, ast.Attribute)
            and _name_of(step.value.func.value) == node.id
            and step.value.func.attr in ("append", "extend")
        ):
            added = literal(step.value.args[0], None) if step.value.args else None
            if step.value.func.attr == "append":
                added = None if added is None else [added]
            value = None if value is None or added is None else [*value, *added]
    return value


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    yield from sorted(calls, key=lambda c: (c.lineno, c.col_offset))


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _entry(call: ast.Call, options: list[str]) -> dict[str, Any] | str:
    """A table entry, or why the call cannot become one."""
    if not options or not all(o.startswith("-") for o in options):
        return "a positional argument (Megatron's are all options)"
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    if any(k.arg is None for k in call.keywords):
        return "keyword arguments passed as **mapping"
    long = [o for o in options if o.startswith("--")]
    dest = literal(keywords.get("dest"), None) or (long or options)[0].lstrip("-")
    dest = str(dest).replace("-", "_")
    action_node = keywords.get("action")
    action = "store"
    if isinstance(action_node, ast.Constant) and isinstance(action_node.value, str):
        action = action_node.value
    elif action_node is not None and _name_of(action_node) != "BooleanOptionalAction":
        return f"action {ast.unparse(action_node)} has no form in the argument table"
    default_node = keywords.get("default")
    default = literal(default_node, None) if default_node is not None else None
    choices = literal(keywords.get("choices"), None)
    if choices is not None and not isinstance(choices, (list, tuple)):
        choices = None
    type_name = _name_of(keywords["type"]) if "type" in keywords else None
    arg_type = type_name if type_name in _TYPES else None
    if action_node is not None and _name_of(action_node) == "BooleanOptionalAction":
        negatives = ["--no-" + o[2:] for o in long]
        return _make(dest, options + negatives, "store", None, 0, default, None, None, None)
    if action == "store_true":
        return _make(dest, options, "store_true", "bool", 0, default is True, True, None, None)
    if action == "store_false":
        default = not (default_node is not None and default is False)
        return _make(dest, options, "store_false", "bool", 0, default, False, None, None)
    if action != "store":
        return f"action {action!r} has no form in the argument table"
    nargs = literal(keywords.get("nargs"), None) if "nargs" in keywords else None
    if nargs in ("+", "*"):
        element = arg_type or ("str" if "type" not in keywords else None)
        if element is None:
            return f"a list of values converted by {type_name or 'a callable'}"
        listed = _list(choices)
        return _make(dest, options, "store", "list", nargs, default, None, listed, element)
    if nargs is not None:
        return f"nargs={nargs!r} has no form in the argument table"
    if "type" not in keywords:
        arg_type = "str"  # argparse passes the word as it is
    return _make(dest, options, "store", arg_type, None, default, None, _list(choices), None)


def _make(
    dest: str,
    options: list[str],
    action: str,
    arg_type: str | None,
    nargs: int | str | None,
    default: Any,
    const: Any,
    choices: list[Any] | None,
    element_type: str | None,
) -> dict[str, Any]:
    return {
        "action_type": action,
        "arg_type": arg_type,
        "choices": choices,
        "const": const,
        "default": _plain(default),
        "dest": dest,
        "element_type": element_type,
        "nargs": nargs,
        "option_strings": options,
    }


def _list(value: Any) -> list[Any] | None:
    return None if value is None else list(value)


def _plain(value: Any) -> Any:
    """JSON-ready: tuples become lists; anything else not JSON is an unknown default."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None
