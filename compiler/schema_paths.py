"""Which subschemas of the experiment schema judge one leaf of a config, so that the configs
made from one model config (`leaves.py`), which differ from it only in some leaf values, are
validated by those values alone (`validate.Validator`).

Such a config is valid exactly when the model is and each changed value passes the
subschemas that apply at its path, provided no schema on the way down judges a mapping or list
by the values below it. Those that do (`oneOf`, `anyOf`, `not`, `enum`, `const`,
`uniqueItems`, `contains`, and any keyword not known here) make the path `Unsupported`, and
such configs are validated whole. An `if` on the way is taken as it went for the model when it
reads only keys whose values do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import unquote

from .tree import KeyPath

Location = tuple[str, str]  # (schema resource name, JSON pointer into it)
# Whether the schema at a location accepts a value (the model's mapping, for an `if`).
Accepts = Callable[[Location, Any], bool]

# Keywords that judge a mapping or list by its keys, its length or its own type, or that only
# annotate: whatever the values below them, they say the same for a config and its model.
_UNCHANGED = frozenset(
    {
        "$schema",
        "$anchor",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
        "type",
        "required",
        "dependentRequired",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "minItems",
        "maxItems",
        # Keywords of texts and numbers: they pass any mapping or list.
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)


class Unsupported(Exception):
    """A schema on the way to a leaf could judge a mapping or list by a value below it."""


def leaf_schemas(
    resources: Mapping[str, Any],
    root: str,
    model: Any,
    path: KeyPath,
    changed: Collection[KeyPath],
    accepts: Accepts,
) -> list[Location]:
    """The locations of the subschemas that judge the value at `path` of a config that is
    `model` (valid against the schema `resources[root]`) but for the values at `changed`
    (which include `path`). Raises Unsupported when the value could change what a schema says
    of a mapping or list above it."""
    walk = _Walk(resources, changed, accepts)
    walk.visit((root, ""), resources[root], model, (), path)
    return walk.found


class _Walk:
    """Down one path of a config and, beside it, the schemas that apply there."""

    def __init__(
        self, resources: Mapping[str, Any], changed: Collection[KeyPath], accepts: Accepts
    ) -> None:
        self.resources = resources
        self.changed = changed
        self.accepts = accepts
        self.found: list[Location] = []

    def visit(
        self, where: Location, schema: Any, instance: Any, at: KeyPath, rest: KeyPath
    ) -> None:
        """Collect what judges the value at `at + rest`, from `schema` at `where`, which
        applies to `instance`, the model's value at `at`."""
        if not rest:
            self.found.append(where)  # judges the leaf itself: any keyword goes
            return
        if schema is True:
            return
        if not isinstance(schema, dict):
            raise Unsupported(f"{where}: a schema that is {schema!r}")
        key = rest[0]
        mapping = isinstance(instance, dict)
        if mapping != isinstance(key, str) or not (mapping or isinstance(instance, list)):
            raise Unsupported(f"{where}: {key!r} of a {type(instance).__name__}")
        for word, sub in schema.items():
            if word == "$id" and where[1]:
                # Its `$ref`s are resolved against another base than its file's.
                raise Unsupported(f"{where}: $id")
            if word in _UNCHANGED or word == "$id" or word.startswith("x-"):
                continue
            if word in ("then", "else"):
                continue  # taken with their `if`
            self._word(where, schema, word, sub, instance, at, rest)

    def _word(
        self,
        where: Location,
        schema: dict[str, Any],
        word: str,
        sub: Any,
        instance: Any,
        at: KeyPath,
        rest: KeyPath,
    ) -> None:
        key = rest[0]
        mapping = isinstance(instance, dict)
        name, pointer = where
        if word in ("properties", "additionalProperties", "items"):
            found = _below(word, sub, schema, key, mapping)
            if found is not None:
                tokens, below = found
                child = (name, _pointer(pointer, *tokens))
                self.visit(child, below, instance[key], (*at, key), rest[1:])
        elif word == "allOf":
            for number, branch in enumerate(sub):
                self.visit((name, _pointer(pointer, word, str(number))), branch, instance, at, rest)
        elif word == "$ref":
            target, schema_there = _resolve(self.resources, name, sub)
            self.visit(target, schema_there, instance, at, rest)
        elif word == "if":
            if not mapping or not _steady(sub, at, self.changed):
                raise Unsupported(f"{where}: an `if` that reads changed values")
            taken = "then" if self.accepts((name, _pointer(pointer, word)), instance) else "else"
            if taken in schema:
                self.visit((name, _pointer(pointer, taken)), schema[taken], instance, at, rest)
        else:
            raise Unsupported(f"{where}: {word}")


def _below(
    word: str, sub: Any, schema: dict[str, Any], key: str | int, mapping: bool
) -> tuple[tuple[str, ...], Any] | None:
    """The schema that `word` (with value `sub`, in `schema`) applies to the child `key`, and
    the pointer tokens to it; None when it does not apply to that child."""
    if word == "properties":
        return ((word, str(key)), sub[key]) if mapping and key in sub else None
    if word == "additionalProperties":
        return ((word,), sub) if mapping and key not in schema.get("properties", {}) else None
    return ((word,), sub) if not mapping else None  # items


def _steady(condition: Any, at: KeyPath, changed: Collection[KeyPath]) -> bool:
    """Whether an `if` at the mapping `at` says the same of a config as of its model: it
    reads only `properties` (and `required`) whose values hold no changed path."""
    if condition is True or condition is False:
        return True
    if not isinstance(condition, dict):
        return False
    if any(w not in ("properties", "required") and w not in _UNCHANGED for w in condition):
        return False
    read = condition.get("properties", {})
    depth = len(at)
    return not any(p[:depth] == at and len(p) > depth and p[depth] in read for p in changed)


def _resolve(resources: Mapping[str, Any], current: str, ref: Any) -> tuple[Location, Any]:
    """The location and schema a `$ref` names: in this resource or another one given."""
    if not isinstance(ref, str):
        raise Unsupported(f"a $ref that is {ref!r}")
    name, _, fragment = ref.partition("#")
    name = name or current
    if name not in resources or (fragment and not fragment.startswith("/")):
        raise Unsupported(f"$ref {ref!r}")
    schema = resources[name]
    pointer = unquote(fragment)
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(schema, dict) and token in schema:
            schema = schema[token]
        elif isinstance(schema, list) and token.isdigit() and int(token) < len(schema):
            schema = schema[int(token)]
        else:
            raise Unsupported(f"$ref {ref!r}")
    return (name, pointer), schema


def _pointer(base: str, *tokens: str) -> str:
    return base + "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
