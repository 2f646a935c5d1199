"""Megatron-LM's arguments read from its source with `ast`: every `add_argument(...)` call of
the argument parser module, as the entries of the argument table (tools/megatron-args.json's
format). The checkout's code is parsed, never imported or run, so any fork can be read on a
login node without its dependencies.

What a static read cannot know is left out and listed: arguments whose action or nargs the
table has no form for (`append`, `count`, `nargs='?'`), and groups built at run time (Megatron
builds some groups from dataclasses, `ArgumentGroupFactory(TransformerConfig)`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where the parser lives, newest layout first.
PARSER_FILES = ("megatron/training/arguments.py", "megatron/arguments.py")
_TYPES = {"int", "float", "str", "bool"}


@dataclass(frozen=True)
class Skipped:
    line: int
    what: str  # the option strings
    why: str


@dataclass
class ArgumentTable:
    arguments: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    factories: list[int] = field(default_factory=list)  # lines of groups built at run time


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


def read_table(source: str, filename: str = "<arguments>") -> ArgumentTable:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise NotAParser(f"{filename}:{exc.lineno}: not Python this reader can parse") from None
    table = ArgumentTable()
    seen: dict[str, int] = {}
    flags: set[str] = set()
    for call in _calls(tree):
        if _name_of(call.func) == "ArgumentGroupFactory":
            table.factories.append(call.lineno)
            continue
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument"):
            continue
        options = [
            a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
        shown = "/".join(options) or "(positional)"
        entry = _entry(call, options)
        if isinstance(entry, str):
            table.skipped.append(Skipped(call.lineno, shown, entry))
            continue
        dest = entry["dest"]
        if dest in seen or flags & set(entry["option_strings"]):
            table.skipped.append(
                Skipped(call.lineno, shown, f"dest or flag already added on line {seen.get(dest)}")
            )
            continue
        seen[dest] = call.lineno
        flags.update(entry["option_strings"])
        table.arguments.append(entry)
    table.arguments.sort(key=lambda e: e["dest"])
    return table


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
    dest = _literal(keywords.get("dest"), None) or (long or options)[0].lstrip("-")
    dest = str(dest).replace("-", "_")
    action_node = keywords.get("action")
    action = "store"
    if isinstance(action_node, ast.Constant) and isinstance(action_node.value, str):
        action = action_node.value
    elif action_node is not None and _name_of(action_node) != "BooleanOptionalAction":
        return f"action {ast.unparse(action_node)} has no form in the argument table"
    default_node = keywords.get("default")
    default = _literal(default_node, None) if default_node is not None else None
    choices = _literal(keywords.get("choices"), None)
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
    nargs = _literal(keywords.get("nargs"), None) if "nargs" in keywords else None
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


def _literal(node: ast.expr | None, otherwise: Any) -> Any:
    """A literal's value; a computed one (a call, a name) is `otherwise`."""
    if node is None:
        return otherwise
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return otherwise
