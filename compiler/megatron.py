"""Megatron-LM arguments: the generated schema of `backend.megatron` and the argv it renders to.

The schema (schemas/megatron.schema.json, from tools/gen_megatron_schema.py) carries one
`x-megatron` annotation per argparse dest; this module turns validated values into flags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any


@cache
def megatron_schema() -> dict[str, Any]:
    """The `backend.megatron` JSON Schema, read once. Shared: do not mutate it."""
    text = files("oellm.schemas").joinpath("megatron.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _annotations() -> dict[str, dict[str, Any]]:
    properties: dict[str, Any] = megatron_schema()["properties"]
    return {dest: prop["x-megatron"] for dest, prop in properties.items()}


@cache
def megatron_dests() -> frozenset[str]:
    """Every known dest, for did-you-mean suggestions on unknown keys."""
    return frozenset(_annotations())


def _token(value: Any, token_type: str | None) -> str:
    """One argv token for a scalar value."""
    if isinstance(value, bool):
        raise ValueError(f"boolean {value!r} where Megatron expects a value")
    if isinstance(value, float):
        # JSON Schema's "integer" admits 8.0, but Megatron's int("8.0") would fail.
        if token_type == "int" and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    raise ValueError(f"cannot pass {value!r} as a Megatron argument")


def _flags(meta: Mapping[str, Any], value: Any) -> list[str]:
    flag: str = meta["flag"]
    action = meta["action"]
    if action == "store_true":
        return [flag] if value else []
    if action == "store_false":
        # The flag turns the feature off (`add_bias_linear: false` -> --disable-bias-linear);
        # true is Megatron's default, so it needs no flag.
        return [flag] if value is False else []
    if action == "boolean_optional":
        negative: str = meta["negative_flag"]
        return [flag] if value else [negative]
    if meta["nargs"] in ("+", "*"):
        return [flag, *(_token(item, meta["type"]) for item in value)]
    if meta["type"] == "bool":
        # --lazy-mpu-init and --onnx-safe are `type=bool` with default None: argparse calls
        # bool() on the token, so any non-empty word (even "false") means True. False can
        # only be said by leaving the flag out, which matches the falsy default.
        return [flag, "true"] if value else []
    return [flag, _token(value, meta["type"])]


def megatron_argv(args: Mapping[str, Any]) -> list[str]:
    """Megatron-LM flags for a validated `backend.megatron` map, in sorted dest order.

    A None value means "do not pass this flag". Tokens are unquoted; the renderer quotes them.
    """
    annotations = _annotations()
    argv: list[str] = []
    for dest in sorted(args):
        value = args[dest]
        if value is None:
            continue
        if dest not in annotations:
            raise ValueError(f"unknown Megatron argument {dest!r} (validate the config first)")
        argv.extend(_flags(annotations[dest], value))
    return argv
