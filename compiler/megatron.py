"""Megatron-LM arguments: the generated schema of `backend.megatron` and the argv it renders to.

The schema (schemas/megatron.schema.json, from tools/gen_megatron_schema.py) carries one
`x-megatron` annotation per argparse dest; this module turns validated values into flags.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

# A fork's schema in place of the shipped one (megatron_source.schema_from sets it).
_FORK: dict[str, Any] | None = None


def use_schema(schema: dict[str, Any] | None) -> None:
    global _FORK
    _FORK = schema


@cache
def megatron_schema() -> dict[str, Any]:
    """The `backend.megatron` JSON Schema, read once. Shared: do not mutate it."""
    if _FORK is not None:
        return _FORK
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


def megatron_default(dest: str) -> Any:
    """Megatron's default for `dest` (None for an unknown one): what it uses when a config
    leaves the argument out."""
    meta = _annotations().get(dest)
    return None if meta is None else meta.get("default")


# Megatron's abbreviations, spelled out so that `learning_rate` finds `lr` and
# `sequence_length` finds `seq_length` (word by word, as in the argparse dests).
_WORDS: dict[str, tuple[str, ...]] = {
    "lr": ("learning", "rate"),
    "seq": ("sequence",),
    "len": ("length",),
    "iters": ("iterations",),
    "iter": ("iteration",),
    "num": ("number",),
    "attn": ("attention",),
    "init": ("initialization",),
    "ckpt": ("checkpoint",),
    "tp": ("tensor", "parallel"),
    "pp": ("pipeline", "parallel"),
    "dp": ("data", "parallel"),
    "grad": ("gradient",),
    "fp": ("floating", "point"),
}
_CUTOFF = 0.6


@cache
def _words(name: str) -> tuple[str, ...]:
    out: list[str] = []
    for word in name.lower().strip("-").replace("-", "_").split("_"):
        if word:
            out.extend(_WORDS.get(word, (word,)))
    return tuple(out)


@cache
def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _coverage(words: tuple[str, ...], other: tuple[str, ...]) -> float:
    return sum(max(_ratio(word, o) for o in other) for word in words) / len(words)


def _word_score(typed: tuple[str, ...], known: tuple[str, ...]) -> float:
    """How well the words match both ways (geometric mean), so a name with words of its own
    (`lr_decay_style` for `learning_rate`) or one that leaves typed words out scores lower."""
    if not typed or not known:
        return 0.0
    return math.sqrt(_coverage(typed, known) * _coverage(known, typed))


@cache
def _names() -> dict[str, tuple[str, str]]:
    """Every spelling a user might write -> (dest, how to write it): the dests, and the flags
    (`--disable-bias-linear` -> `add_bias_linear: false`)."""
    names: dict[str, tuple[str, str]] = {dest: (dest, f"'{dest}'") for dest in _annotations()}
    for dest, meta in _annotations().items():
        flag = meta["flag"].lstrip("-").replace("-", "_")
        if meta["action"] == "store_false":
            names.setdefault(flag, (dest, f"'{dest}: false' (it renders {meta['flag']})"))
        else:
            names.setdefault(flag, (dest, f"'{dest}' (the key of {meta['flag']})"))
        negative = meta.get("negative_flag")
        if negative:
            names.setdefault(
                negative.lstrip("-").replace("-", "_"),
                (dest, f"'{dest}: false' (it renders {negative})"),
            )
    return names


@cache
def suggest_argument(typed: str) -> str | None:
    """A did-you-mean for an unknown `backend.megatron` key, or None when nothing is close."""
    names = _names()
    normal = typed.lower().strip("-").replace("-", "_")
    if normal in names:
        return f"did you mean {names[normal][1]}?"
    typed_words = _words(normal)
    best: tuple[float, str] | None = None
    for name in sorted(names):
        whole = difflib.SequenceMatcher(None, normal, name).ratio()
        words = _word_score(typed_words, _words(name))
        # The better measure decides; the other breaks near ties.
        score = max(whole, words) + 0.25 * min(whole, words)
        if max(whole, words) >= _CUTOFF and (best is None or score > best[0]):
            best = (score, name)
    return f"did you mean {names[best[1]][1]}?" if best else None


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
