"""Argument groups Megatron-LM builds from config dataclasses
(`ArgumentGroupFactory(TransformerConfig, exclude=[...]).build_group(parser, title)` in
megatron/training/argument_utils.py), read with `ast` as the `add_argument` calls the factory
would make at run time:

- one argument per dataclass field (inherited ones first), not for excluded names nor fields
  with `init=False`; the flag is `--` + the name with `_` -> `-`, the dest the name;
- the default is the field's default (a literal `default_factory` too);
- `X | None` / `Optional[X]` is X; `list[X]` takes one or more X; `Literal[...]` takes its
  values; an Enum takes its member names; a `bool` is `store_true` when its default is False,
  else `store_false` under `--no-NAME` and `--disable-NAME`;
- `metadata={"argparse_meta": {...}}` overrides all of that (`arg_names` are the flags).

Each field becomes a synthetic `add_argument` call, so it is mapped to a table entry exactly as
the parser's own calls are.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from oellm.megatron_modules import ClassRef, Module, Modules, literal

_PRIMITIVES = {"int", "float", "str", "bool"}
# Bare typing generics: get_origin() of them is set, so the factory cannot infer a type.
_GENERICS = {"Callable", "Dict", "List", "Tuple", "Set", "Sequence", "Mapping", "Type", "Union"}


@dataclass(frozen=True)
class Field:
    name: str
    annotation: ast.expr
    value: ast.expr | None
    module: Module  # where the field is declared: its names resolve there
    line: int


@dataclass(frozen=True)
class FieldCall:
    """The `add_argument` call the factory makes for one field, or why it makes none."""

    field: Field
    call: ast.Call | None
    options: list[str]
    why: str = ""


class NotInferable(Exception):
    """The factory's own TypeInferenceError: a type argparse cannot take."""


def fields_of(modules: Modules, ref: ClassRef, depth: int = 0) -> dict[str, Field]:
    """A dataclass's fields in `dataclasses.fields` order: a base's first, and a field that a
    subclass declares again keeps its base's place."""
    found: dict[str, Field] = {}
    if depth < 20:
        for base in ref.node.bases:
            parent = modules.resolve(ref.module, base)
            if isinstance(parent, ClassRef) and _is_dataclass(parent.node):
                found.update(fields_of(modules, parent, depth + 1))
    for statement in ref.node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        annotation = statement.annotation
        if (_subscript_name(annotation) or _name(annotation)) in ("ClassVar", "InitVar"):
            continue
        name = statement.target.id
        found[name] = Field(
            name, statement.annotation, statement.value, ref.module, statement.lineno
        )
    return found


def field_calls(modules: Modules, ref: ClassRef, exclude: set[str]) -> Iterator[FieldCall]:
    for item in fields_of(modules, ref).values():
        if item.name in exclude:
            continue
        spec = _field_spec(item.value)
        if spec is None:
            yield FieldCall(item, None, [], "a field(...) with keywords this reader cannot read")
            continue
        if literal(spec.get("init"), True) is False:
            continue
        yield _call(modules, item, spec)


def _call(modules: Modules, item: Field, spec: dict[str, ast.expr]) -> FieldCall:
    flag = "--" + item.name.replace("_", "-")
    default = _default(spec)
    meta = _meta(spec.get("metadata"))
    if meta is None:
        return FieldCall(item, None, [flag], "argparse_meta is not a literal dict")
    keywords: dict[str, ast.expr] = {"dest": ast.Constant(item.name)}
    if default is not None:
        keywords["default"] = default
    options = [flag]
    try:
        inferred, members = _infer(modules, item.module, item.annotation)
        # An enum default (AttnBackend.auto) is told on the command line by its name.
        if members is not None and isinstance(default, ast.Attribute) and default.attr in members:
            keywords["default"] = ast.Constant(default.attr)
        keywords.update(inferred)
        if _name(keywords.get("type")) == "bool":
            del keywords["type"]
            default_value = literal(default, _Unknown) if default is not None else _Unknown
            if default_value is _Unknown:
                return FieldCall(item, None, options, "a bool field whose default is computed")
            if default_value == False:  # noqa: E712 - the factory compares with ==
                keywords["action"] = ast.Constant("store_true")
            else:
                keywords["action"] = ast.Constant("store_false")
                options = ["--no-" + flag[2:], "--disable-" + flag[2:]]
    except NotInferable as exc:
        if not meta:
            return FieldCall(item, None, options, f"{exc}: Megatron cannot build this argument")
    names = meta.pop("arg_names", None)
    if names is not None:
        listed = literal(names, None)
        if not isinstance(listed, (list, tuple)) or not all(isinstance(n, str) for n in listed):
            return FieldCall(item, None, options, "argparse_meta arg_names is not a literal list")
        options = list(listed)
    keywords.update(meta)
    call = ast.Call(
        func=ast.Attribute(value=ast.Name("group"), attr="add_argument"),
        args=[ast.Constant(o) for o in options],
        keywords=[ast.keyword(arg=k, value=v) for k, v in keywords.items()],
    )
    ast.copy_location(call, item.annotation)
    return FieldCall(item, call, options)


class _Unknown:
    """A default this reader cannot compute."""


def _infer(
    modules: Modules, module: Module, node: ast.expr
) -> tuple[dict[str, ast.expr], list[str] | None]:
    """The factory's `_extract_type`: keywords for add_argument, and the enum's member names
    when the type is an enum."""
    members = _enum(modules, module, node)
    if members is not None:
        return {"type": ast.Name("str"), "choices": _constants(members)}, members
    union = _union(node)
    if union is not None:
        # Optional[X] only: the factory looks at the second member alone.
        if len(union) >= 2 and _is_none(union[1]):
            return _infer(modules, module, union[0])
        raise NotInferable(f"the union {ast.unparse(node)}")
    origin = _subscript_name(node)
    if origin in ("list", "List"):
        assert isinstance(node, ast.Subscript)
        if isinstance(node.slice, ast.Tuple):
            raise NotInferable(f"the list of several types {ast.unparse(node)}")
        inner, inner_members = _infer(modules, module, node.slice)
        return {**inner, "nargs": ast.Constant("+")}, inner_members
    if origin == "Literal":
        assert isinstance(node, ast.Subscript)
        values = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        choices = [literal(v, _Unknown) for v in values]
        if not choices or any(v is _Unknown for v in choices):
            raise NotInferable(f"the Literal {ast.unparse(node)} of computed values")
        return {"type": ast.Name(type(choices[0]).__name__), "choices": _constants(choices)}, None
    if origin is not None:
        raise NotInferable(f"the type {ast.unparse(node)}")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        raise NotInferable(f"the string annotation {node.value!r}")
    if isinstance(node, ast.Name) and node.id in _GENERICS:
        raise NotInferable(f"the type {node.id}")
    if isinstance(node, ast.Name) and node.id in _PRIMITIVES:
        return {"type": ast.Name(node.id)}, None
    # Any other class is argparse's converter: the flag takes one word, of no known type.
    return {"type": ast.Name("_converter")}, None


def _enum(modules: Modules, module: Module, node: ast.expr) -> list[str] | None:
    if not isinstance(node, (ast.Name, ast.Attribute)):
        return None
    if isinstance(node, ast.Name) and node.id in _PRIMITIVES:
        return None
    found = modules.resolve(module, node)
    return None if found is None else modules.enum_members(found)


def _union(node: ast.expr) -> list[ast.expr] | None:
    """The members of `X | Y` or `Union[X, Y]` / `Optional[X]`, nested unions flattened."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*(_union(node.left) or [node.left]), *(_union(node.right) or [node.right])]
    origin = _subscript_name(node)
    if isinstance(node, ast.Subscript) and origin in ("Union", "Optional"):
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        flat = [member for part in parts for member in (_union(part) or [part])]
        return [*flat, ast.Constant(None)] if origin == "Optional" else flat
    return None


def _is_none(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and node.value is None) or _name(node) == "NoneType"


def _subscript_name(node: ast.expr) -> str | None:
    return _name(node.value) if isinstance(node, ast.Subscript) else None


def _name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_dataclass(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if _name(target) == "dataclass":
            return True
    return False


def _field_spec(value: ast.expr | None) -> dict[str, ast.expr] | None:
    """`x: T = value` as field() keywords; None when a `field(...)` passes a **mapping."""
    if value is None:
        return {}
    if isinstance(value, ast.Call) and _name(value.func) == "field":
        if value.args or any(k.arg is None for k in value.keywords):
            return None
        return {k.arg: k.value for k in value.keywords if k.arg is not None}
    return {"default": value}


def _default(spec: dict[str, ast.expr]) -> ast.expr | None:
    """The default's node; a default_factory is called only when it is a literal one."""
    if "default" in spec:
        return spec["default"]
    factory = spec.get("default_factory")
    if isinstance(factory, ast.Name) and factory.id in ("list", "tuple", "dict", "set"):
        return ast.List(elts=[]) if factory.id in ("list", "tuple") else ast.Name("_computed")
    if isinstance(factory, ast.Lambda):
        return factory.body
    return None if factory is None else ast.Name("_computed")


def _meta(node: ast.expr | None) -> dict[str, ast.expr] | None:
    """The argparse_meta keywords of a field's metadata ({} when it has none)."""
    if node is None:
        return {}
    if not isinstance(node, ast.Dict):
        return None
    for key, value in zip(node.keys, node.values, strict=True):
        if isinstance(key, ast.Constant) and key.value == "argparse_meta":
            if not isinstance(value, ast.Dict):
                return None
            meta: dict[str, ast.expr] = {}
            for meta_key, meta_value in zip(value.keys, value.values, strict=True):
                if not (isinstance(meta_key, ast.Constant) and isinstance(meta_key.value, str)):
                    return None
                meta[meta_key.value] = meta_value
            return meta
    return {}


def _constants(values: Sequence[Any]) -> ast.List:
    return ast.List(elts=[ast.Constant(v) for v in values])
