"""The generated Megatron schema is current and valid, and values become the right flags."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from oellm.compiler.backends.megatron import (
    megatron_argv,
    megatron_dests,
    megatron_schema,
    suggest_argument,
)
from tests.helpers import compile_error, rendered, write

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tools" / "megatron-args.json"
SCHEMA = ROOT / "schemas" / "megatron.schema.json"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_megatron_schema", ROOT / "tools" / "gen_megatron_schema.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _table() -> dict[str, Any]:
    table: dict[str, Any] = json.loads(TABLE.read_text(encoding="utf-8"))
    return table


def _errors(args: dict[str, Any]) -> list[tuple[str, list[str | int]]]:
    validator = Draft202012Validator(megatron_schema())
    return sorted(
        (str(error.validator), list(error.absolute_path)) for error in validator.iter_errors(args)
    )


# --- the schema itself ---------------------------------------------------------------------


def test_committed_schema_is_current() -> None:
    expected = gen.render(gen.build_schema(_table()))
    assert SCHEMA.read_text(encoding="utf-8") == expected
    assert megatron_schema() == json.loads(expected)


def test_is_current_notices_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "megatron.schema.json"
    stale.write_text(SCHEMA.read_text(encoding="utf-8").replace('"--lr"', '"--lr2"'))
    assert gen.is_current(TABLE, SCHEMA)
    assert not gen.is_current(TABLE, stale)
    assert not gen.is_current(TABLE, tmp_path / "missing.json")


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(megatron_schema())
    assert megatron_schema()["$id"] == "megatron.schema.json"


def test_every_table_dest_is_a_property() -> None:
    dests = {entry["dest"] for entry in _table()["arguments"]}
    assert len(dests) == 591
    assert megatron_dests() == dests


def test_generator_refuses_an_unknown_action() -> None:
    table = {
        "source": "test",
        "arguments": [
            {
                "action_type": "append",
                "arg_type": "str",
                "choices": None,
                "const": None,
                "default": None,
                "dest": "x",
                "element_type": None,
                "nargs": None,
                "option_strings": ["--x"],
            }
        ],
    }
    with pytest.raises(gen.TableError, match="unknown action"):
        gen.build_schema(table)


# --- validation ----------------------------------------------------------------------------


def test_typical_args_validate() -> None:
    args = {
        "lr": 3e-4,
        "min_lr": 0,
        "global_batch_size": 256,
        "micro_batch_size": 2,
        "seq_length": None,
        "lr_decay_style": "WSD",
        "tokenizer_type": "HuggingFaceTokenizer",
        "add_bias_linear": False,
        "use_flash_attn": True,
        "bf16": True,
        "attention_backend": "flash",
        "normalization": "RMSNorm",
        "data_path": ["0.5", "/data/a_text_document", "0.5", "/data/b_text_document"],
        "mrope_section": [16, 24, 24],
        "moe_router_load_balancing_type": ["aux_loss"],
        "moe_layer_freq": "([1]*3+[0]*1)*3",
        "window_size": "(128,0)",
        "rl_partial_rollouts": False,
        "non_persistent_ckpt_type": None,
    }
    assert _errors(args) == []


@pytest.mark.parametrize(
    ("args", "errors"),
    [
        ({"lr": "abc"}, [("type", ["lr"])]),
        ({"lrr": 1e-4}, [("additionalProperties", [])]),
        ({"lr_decay_style": "cosinus"}, [("enum", ["lr_decay_style"])]),
        ({"empty_unused_memory_level": 3}, [("enum", ["empty_unused_memory_level"])]),
        # The table's recorded choices for --attention-backend were the enum values.
        (
            {"attention_backend": 1},
            [("enum", ["attention_backend"]), ("type", ["attention_backend"])],
        ),
        ({"global_batch_size": 1.5}, [("type", ["global_batch_size"])]),
        ({"use_flash_attn": "yes"}, [("type", ["use_flash_attn"])]),
        ({"mrope_section": []}, [("minItems", ["mrope_section"])]),
        ({"mrope_section": [1, "a"]}, [("type", ["mrope_section", 1])]),
        ({"data_path": "/data/a"}, [("type", ["data_path"])]),
        (
            {"moe_router_load_balancing_type": ["bogus"]},
            [("enum", ["moe_router_load_balancing_type", 0])],
        ),
        ({"moe_layer_freq": True}, [("type", ["moe_layer_freq"])]),
    ],
)
def test_wrong_args_do_not_validate(
    args: dict[str, Any], errors: list[tuple[str, list[str | int]]]
) -> None:
    assert _errors(args) == errors


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        # None never reaches the command line.
        ({"lr": None, "add_bias_linear": None, "data_path": None}, []),
        # int, and an integral float that JSON Schema accepts as an integer
        ({"global_batch_size": 256}, ["--global-batch-size", "256"]),
        ({"global_batch_size": 8.0}, ["--global-batch-size", "8"]),
        # float: shortest round-trip repr
        ({"lr": 0.0001}, ["--lr", "0.0001"]),
        ({"lr": 1e-05}, ["--lr", "1e-05"]),
        ({"lr": 3e-4}, ["--lr", "0.0003"]),
        ({"min_lr": 0}, ["--min-lr", "0"]),
        # strings are passed verbatim; quoting is the renderer's job
        ({"tokenizer_type": "GPT2BPETokenizer"}, ["--tokenizer-type", "GPT2BPETokenizer"]),
        ({"save": "/ckpt/a b/$(id)"}, ["--save", "/ckpt/a b/$(id)"]),
        # the flag is the option string, not the dest
        ({"fp8": "hybrid"}, ["--fp8-format", "hybrid"]),
        ({"attention_backend": "flash"}, ["--attention-backend", "flash"]),
        # untyped (custom converter) arguments
        ({"moe_layer_freq": 2}, ["--moe-layer-freq", "2"]),
        ({"window_size": "(128,0)"}, ["--window-size", "(128,0)"]),
        # store_true
        ({"use_flash_attn": True}, ["--use-flash-attn"]),
        ({"use_flash_attn": False}, []),
        ({"override_opt_param_scheduler": True}, ["--override-opt_param-scheduler"]),
        # store_false: false passes the disabling flag, true is Megatron's default
        ({"add_bias_linear": False}, ["--disable-bias-linear"]),
        ({"add_bias_linear": True}, []),
        ({"apply_rope_fusion": False}, ["--no-rope-fusion"]),
        ({"ckpt_fully_parallel_save": False}, ["--no-ckpt-fully-parallel-save"]),
        # BooleanOptionalAction: both values are explicit
        ({"rl_partial_rollouts": True}, ["--rl-partial-rollouts"]),
        ({"rl_partial_rollouts": False}, ["--no-rl-partial-rollouts"]),
        # type=bool: any non-empty token is True, so false is said by omission
        ({"lazy_mpu_init": True}, ["--lazy-mpu-init", "true"]),
        ({"lazy_mpu_init": False}, []),
        # nargs lists
        ({"mrope_section": [16, 24, 24]}, ["--mrope-section", "16", "24", "24"]),
        ({"moe_aux_loss_coeff": [0.01, 1e-3]}, ["--moe-aux-loss-coeff", "0.01", "0.001"]),
        (
            {"data_path": ["0.3", "/d/a", "0.7", "/d/b"]},
            ["--data-path", "0.3", "/d/a", "0.7", "/d/b"],
        ),
        ({"data_path": []}, ["--data-path"]),
        # several arguments come out in sorted dest order, whatever the input order
        (
            {"seq_length": 4096, "add_bias_linear": False, "lr": 1e-4, "bf16": True},
            ["--disable-bias-linear", "--bf16", "--lr", "0.0001", "--seq-length", "4096"],
        ),
    ],
)
def test_argv(args: dict[str, Any], argv: list[str]) -> None:
    assert _errors(args) == []
    assert megatron_argv(args) == argv


def test_unknown_dest_is_a_bug() -> None:
    with pytest.raises(ValueError, match="lrr"):
        megatron_argv({"lrr": 1e-4})


def _sample(prop: dict[str, Any]) -> Any:
    """A valid non-null value for a property."""
    if "enum" in prop:
        return next(choice for choice in prop["enum"] if choice is not None)
    kind = next(t for t in prop["type"] if t != "null")
    if kind == "array":
        return [_sample({**prop["items"], "type": [prop["items"]["type"]]})]
    return {"boolean": False, "integer": 1, "number": 0.5, "string": "x"}[kind]


def test_every_property_renders_its_flag() -> None:
    for dest, prop in megatron_schema()["properties"].items():
        meta = prop["x-megatron"]
        values = [True, False] if "boolean" in prop["type"] else [_sample(prop)]
        argvs = [megatron_argv({dest: value}) for value in values]
        assert all(_errors({dest: value}) == [] for value in values), dest
        # Some value of every argument reaches the command line, led by one of its flags.
        assert any(argvs), dest
        assert all(argv[0] in (meta["flag"], meta.get("negative_flag")) for argv in argvs if argv)


@pytest.mark.parametrize(
    ("typed", "suggestion"),
    [
        ("lerning_rate", "'lr'"),
        ("learning_rate", "'lr'"),
        ("min_learning_rate", "'min_lr'"),
        ("sequence_length", "'seq_length'"),
        ("seq_len", "'seq_length'"),
        ("hiden_size", "'hidden_size'"),
        ("num_layer", "'num_layers'"),
        ("tensor_parallel", "'tensor_model_parallel_size'"),
        ("warmup_iters", "'lr_warmup_iters'"),
        ("save_intervall", "'save_interval'"),
        ("flash_attention", "'use_flash_attn'"),
        ("lrr", "'lr'"),
        ("fp8_format", "'fp8' (the key of --fp8-format)"),
        ("disable_bias_linear", "'add_bias_linear: false' (it renders --disable-bias-linear)"),
        ("no-rope-fusion", "'apply_rope_fusion: false' (it renders --no-rope-fusion)"),
    ],
)
def test_did_you_mean_for_realistic_typos(typed: str, suggestion: str) -> None:
    assert suggest_argument(typed) == f"did you mean {suggestion}?"


def test_nothing_close_gives_no_suggestion() -> None:
    assert suggest_argument("xyzzy") is None


def test_the_suggestion_reaches_the_error(tmp_path: Path) -> None:
    exp = write(
        tmp_path / "exp.yaml",
        """
        # @package _global_
        defaults:
          - /backend: megatron
        project: {name: t}
        backend:
          megatron:
            lerning_rate: 1.0e-4
        """,
    )
    text = rendered(compile_error(exp))
    assert "exp.yaml:7:5: backend.megatron: unknown argument 'lerning_rate'" in text
    assert "hint: did you mean 'lr'?" in text
