"""The Megatron argument table (one entry per argparse argument: option strings, action,
type, default, choices, nargs) -> the JSON Schema of `backend.megatron`, whose `x-megatron`
annotations tell compiler/backends/megatron.py how to turn each value into flags. Pure data to data:
`tools/gen_megatron_schema.py` writes the shipped schema with it, `oellm megatron-args` a
fork's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}

# argparse's `type` converters whose values are neither numbers nor plain words (moe_freq_type,
# no_rope_freq_type, tuple_type) and plain paths are recorded with arg_type null. All of them
# take an integer or a string on the command line; a boolean would be rendered as "True".
_UNTYPED = ["integer", "string"]

# --attention-backend converts with `AttnBackend[name]`, so the command line takes the enum's
# member names; the table recorded the members' integer values (1..5) as its choices.
_CHOICE_OVERRIDES: dict[str, tuple[list[Any], list[str]]] = {
    "attention_backend": ([1, 2, 3, 4, 5], ["flash", "fused", "unfused", "local", "auto"]),
}


class TableError(Exception):
    """The argument table holds an entry this generator does not know how to map."""


def _flag(entry: Mapping[str, Any]) -> str:
    for option in entry["option_strings"]:
        if option.startswith("--"):
            return str(option)
    raise TableError(f"{entry['dest']}: no option string starts with '--'")


def _negative_flag(entry: Mapping[str, Any], flag: str) -> str | None:
    """The `--no-X` twin of an argparse.BooleanOptionalAction, which the table records as a
    plain `store` with nargs 0 and both option strings."""
    negative = "--no-" + flag[2:]
    if entry["action_type"] == "store" and entry["nargs"] == 0:
        if negative not in entry["option_strings"]:
            raise TableError(f"{entry['dest']}: store with nargs 0 but no {negative}")
        return negative
    return None


def _json_type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise TableError(f"unsupported choice {value!r}")


def _choices(entry: Mapping[str, Any]) -> list[Any] | None:
    dest = entry["dest"]
    choices = entry["choices"]
    if dest in _CHOICE_OVERRIDES:
        recorded, names = _CHOICE_OVERRIDES[dest]
        # A static read (`oellm megatron-args`) sees `choices=list(AttnBackend)` as unknown,
        # or, where a config dataclass declares the enum, as its member names.
        if choices is not None and choices not in (recorded, names):
            raise TableError(f"{dest}: choices changed to {choices!r}; revisit the override")
        return list(names)
    if choices is None:
        return None
    # A None choice means "unset", which a null value (no flag) already expresses.
    return [choice for choice in choices if choice is not None]


def _value_schema(entry: Mapping[str, Any], negative: str | None) -> dict[str, Any]:
    """The schema of a non-null value."""
    action, arg_type, nargs = entry["action_type"], entry["arg_type"], entry["nargs"]
    if action in ("store_true", "store_false") or negative is not None:
        return {"type": "boolean"}
    if action != "store":
        raise TableError(f"{entry['dest']}: unknown action {action!r}")
    choices = _choices(entry)
    if nargs in ("+", "*"):
        element_type = entry["element_type"]
        if arg_type != "list" or element_type not in _JSON_TYPES:
            raise TableError(f"{entry['dest']}: list of {element_type!r}")
        items: dict[str, Any] = {"type": _JSON_TYPES[element_type]}
        if choices is not None:
            items["enum"] = choices
        schema: dict[str, Any] = {"type": "array", "items": items}
        if nargs == "+":
            schema["minItems"] = 1
        return schema
    if nargs is not None:
        raise TableError(f"{entry['dest']}: unsupported nargs {nargs!r}")
    if choices is not None:
        types = sorted({_json_type_of(choice) for choice in choices})
        return {"type": types[0] if len(types) == 1 else types, "enum": choices}
    if arg_type is None:
        return {"type": list(_UNTYPED)}
    if arg_type not in _JSON_TYPES:
        raise TableError(f"{entry['dest']}: unknown arg_type {arg_type!r}")
    return {"type": _JSON_TYPES[arg_type]}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Allow null, which means "do not pass this flag"."""
    nullable = dict(schema)
    types = schema["type"]
    nullable["type"] = [*(types if isinstance(types, list) else [types]), "null"]
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    return nullable


def _property(entry: Mapping[str, Any]) -> dict[str, Any]:
    flag = _flag(entry)
    negative = _negative_flag(entry, flag)
    token_type = entry["element_type"] if entry["nargs"] in ("+", "*") else entry["arg_type"]
    annotation: dict[str, Any] = {
        "action": "boolean_optional" if negative is not None else entry["action_type"],
        "default": entry["default"],
        "flag": flag,
        "nargs": entry["nargs"],
        "type": token_type,
    }
    if negative is not None:
        annotation["negative_flag"] = negative
    return {**_nullable(_value_schema(entry, negative)), "x-megatron": annotation}


def build_schema(
    table: Mapping[str, Any],
    made_by: str = "tools/gen_megatron_schema.py from tools/megatron-args.json",
) -> dict[str, Any]:
    """The JSON Schema of the `backend.megatron` map, from the parsed argument table;
    `made_by` says in its `$comment` what generated it from which table."""
    properties: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for entry in table["arguments"]:
        dest = entry["dest"]
        if dest in properties:
            raise TableError(f"{dest}: listed twice")
        prop = _property(entry)
        flag = prop["x-megatron"]["flag"]
        if flag in flags:
            raise TableError(f"{dest}: flag {flag} also belongs to {flags[flag]}")
        flags[flag] = dest
        properties[dest] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "megatron.schema.json",
        "$comment": f"Generated by {made_by} ({table['source']}). Do not edit by hand.",
        "title": "backend.megatron",
        "description": "Megatron-LM arguments by argparse dest; null leaves the flag out.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


def render(schema: Mapping[str, Any]) -> str:
    """Deterministic text: sorted keys, one-space indent, trailing newline."""
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"
