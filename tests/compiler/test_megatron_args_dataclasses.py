"""`oellm megatron-args` on a checkout laid out like current Megatron-LM, whose parser builds
argument groups from config dataclasses (`ArgumentGroupFactory`): tests/compiler/megatron_head
is a small synthetic one, read with ast and never run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oellm.cli import main
from oellm.megatron_args import read_checkout
from tests.helpers import write

CHECKOUT = Path(__file__).parent / "megatron_head"
PARSER = CHECKOUT / "megatron" / "training" / "arguments.py"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def by_dest(path: Path = CHECKOUT) -> dict[str, dict[str, object]]:
    _, table = read_checkout(path)
    return {str(e["dest"]): e for e in table.arguments}


def test_dataclass_fields_become_arguments_as_the_factory_adds_them() -> None:
    parser, table = read_checkout(CHECKOUT)
    assert parser == PARSER
    args = {e["dest"]: e for e in table.arguments}
    hand_written = {"dtype", "lr", "num_experts", "position_embedding_type"}
    assert sorted(set(args) - hand_written) == [
        # TransformerConfig, with the fields of its base ModelParallelConfig
        "attention_backend",
        "bias_dropout_fusion",
        "check_for_nan",
        "empty_unused_memory_level",
        "exit_signal",
        "hidden_dropout",
        "iterations_to_skip",
        "layernorm_epsilon",
        "load",
        "manual_gc_eval",
        "micro_batch_size",
        "moe_layer_freq",
        "num_layers",
        "override_opt_param_scheduler",
        "profile",
        "profile_ranks",
        "recompute_modules",
        "save",
        "save_interval",
        "sequence_parallel",
        "tensor_model_parallel_size",
    ]
    assert [(g.dataclass.rsplit(".", 1)[1], g.arguments) for g in table.groups] == [
        ("TransformerConfig", 8),
        ("TrainingConfig", 10),
        ("CheckpointConfig", 3),
    ]
    assert args["num_layers"] == {
        "action_type": "store",
        "arg_type": "int",
        "choices": None,
        "const": None,
        "default": 0,
        "dest": "num_layers",
        "element_type": None,
        "nargs": None,
        "option_strings": ["--num-layers"],
    }
    # `int | None` is an int; a subclass's default wins over its base's.
    assert args["micro_batch_size"]["arg_type"] == "int"
    assert args["micro_batch_size"]["default"] is None
    assert args["tensor_model_parallel_size"]["default"] == 2
    # A bool defaulting to False is store_true; any other default is store_false under
    # --no-X and --disable-X.
    assert args["sequence_parallel"]["action_type"] == "store_true"
    for dest in ("manual_gc_eval", "bias_dropout_fusion", "check_for_nan"):
        flag = dest.replace("_", "-")
        assert args[dest]["action_type"] == "store_false"
        assert args[dest]["option_strings"] == [f"--no-{flag}", f"--disable-{flag}"]
    # An enum takes its member names, a Literal its values, a list one or more items.
    backend = args["attention_backend"]
    assert (backend["arg_type"], backend["default"]) == ("str", "auto")
    assert backend["choices"] == ["flash", "fused", "unfused", "local", "auto"]
    signal = args["exit_signal"]
    assert signal["default"] == "SIGTERM" and {"SIGTERM", "SIGINT"} <= set(signal["choices"])
    assert args["empty_unused_memory_level"]["choices"] == [0, 1, 2]
    skip = args["iterations_to_skip"]
    assert (skip["nargs"], skip["element_type"], skip["default"]) == ("+", "int", [])
    assert args["profile_ranks"]["default"] == [0]
    assert args["recompute_modules"]["element_type"] == "str"
    # argparse_meta has the last word: flags, dest, type.
    assert args["layernorm_epsilon"]["option_strings"] == ["--norm-epsilon"]
    assert args["profile"]["option_strings"] == ["--profile"]
    assert args["override_opt_param_scheduler"]["option_strings"] == [
        "--override-opt_param-scheduler",
        "--override-opt-param-scheduler",
    ]
    assert (args["moe_layer_freq"]["arg_type"], args["moe_layer_freq"]["default"]) == ("str", 1)
    assert args["save_interval"]["option_strings"] == [
        "--save-interval",
        "--persistent-save-interval",
    ]


def test_what_the_factory_leaves_out_or_cannot_build_is_listed() -> None:
    _, table = read_checkout(CHECKOUT)
    dests = {e["dest"] for e in table.arguments}
    # Excluded by the literal list, by a variable the function builds, or init=False; a
    # ClassVar is no field.
    for excluded in (
        "init_method",
        "params_dtype",
        "pipeline_dtype",
        "num_moe_experts",
        "most_recent_k",
    ):
        assert excluded not in dests
    assert not dests & {"train_hook", "step", "registry", "counter"}
    skipped = {s.what.split(" ")[0]: (Path(s.file).name, s.why) for s in table.skipped}
    base = CHECKOUT / "megatron/core/model_parallel_config.py"
    assert skipped == {
        "--moe-router-load-balancing-type": (
            "transformer_config.py",
            "the union Union[str, List[str]]: Megatron cannot build this argument",
        ),
        "--cpu-offloading-weights": (
            "transformer_config.py",
            "the string annotation 'torch.Tensor': Megatron cannot build this argument",
        ),
        "--data-path": (
            "training_config.py",
            "the union list[str] | str | None: Megatron cannot build this argument",
        ),
        "--rampup-batch-size": (
            "training_config.py",
            "nargs=3 has no form in the argument table",
        ),
        # The hand-written flag after the factory repeats a field's.
        "--hidden-dropout": (
            "",
            f"dest or flag already added at {base}:{line_of(base, 'hidden_dropout:')}",
        ),
    }
    external = line_of(PARSER, "ArgumentGroupFactory(ExternalConfig)")
    assert [(f.what, f.line) for f in table.factories] == [("ExternalConfig", external)]


def test_the_parser_file_itself_finds_the_checkout_around_it() -> None:
    assert by_dest(PARSER) == by_dest(CHECKOUT)


def test_compile_checks_and_renders_dataclass_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "head"
    code, out, err = run(
        ["megatron-args", "--from", str(CHECKOUT), "--output", str(out_dir)], capsys
    )
    assert code == 0, err
    assert "25 arguments" in out and "21 of them from 3 config dataclasses" in out
    assert "8 arguments from megatron.core.transformer.transformer_config.TransformerConfig" in out
    assert "left out" in out and "not read" in out and "ExternalConfig" in out
    schema = json.loads((out_dir / "megatron.schema.json").read_text())
    assert schema["properties"]["attention_backend"]["enum"] == [
        "flash",
        "fused",
        "unfused",
        "local",
        "auto",
        None,
    ]
    exp = write(
        tmp_path / "exp.yaml",
        """
        defaults:
          - /backend: megatron
        project: {name: head}
        backend:
          megatron:
            num_layers: 2
            attention_backend: flash
            manual_gc_eval: false
            sequence_parallel: true
            layernorm_epsilon: 1.0e-6
            iterations_to_skip: [3, 7]
        """,
    )
    code, _, err = run(
        ["compile", str(exp), "--config-dir", str(out_dir), "-o", str(tmp_path / "b")], capsys
    )
    assert code == 0, err
    script = (tmp_path / "b" / "jobs" / "head.sbatch").read_text()
    for rendered in (
        "--attention-backend flash",
        "--no-manual-gc-eval",
        "--sequence-parallel",
        "--norm-epsilon 1e-06",
        "--iterations-to-skip 3 7",
    ):
        assert rendered in script
    code, _, err = run(
        [
            "compile",
            str(exp),
            "--config-dir",
            str(out_dir),
            "-o",
            str(tmp_path / "c"),
            "backend.megatron.attention_backend=sdpa",
        ],
        capsys,
    )
    assert code == 2 and "sdpa" in err


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        ("megatron/training/arguments.py", "def broken(:\n"),
        ("megatron/training/arguments.py", "x = '\0'\n"),
    ],
)
def test_a_parser_that_does_not_parse_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], relative: str, text: str
) -> None:
    write(tmp_path / relative, text)
    code, out, err = run(
        ["megatron-args", "--from", str(tmp_path), "--output", str(tmp_path / "out")], capsys
    )
    assert code == 2 and "Traceback" not in err + out
    assert str(tmp_path / relative) in err and "Megatron-LM checkout" in err
    assert len(err.strip().splitlines()) == 2  # the message and its hint


def test_a_file_that_is_not_text_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "arguments.py"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = run(
        ["megatron-args", "--from", str(binary), "--output", str(tmp_path / "out")], capsys
    )
    assert code == 2 and str(binary) in err and "Traceback" not in err


def test_a_config_module_that_does_not_parse_leaves_only_its_group_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(CHECKOUT, checkout)
    (checkout / "megatron/training/config/training_config.py").write_text("class (:\n")
    code, out, err = run(
        ["megatron-args", "--from", str(checkout), "--output", str(tmp_path / "out")], capsys
    )
    assert code == 0, err
    assert "TrainingConfig at run time (its dataclass is not found" in out
    args = by_dest(checkout)
    assert "attention_backend" in args and "micro_batch_size" not in args
