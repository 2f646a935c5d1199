"""The `megatron` backend: Megatron-LM's training script with its arguments as flags.

The argument table is the generated schema of `backend.megatron` (schemas/megatron.schema.json,
from tools/gen_megatron_schema.py), which carries one `x-megatron` annotation per argparse dest;
this module turns validated values into flags, starts torchrun under `slurm.launch: per_node`,
lets a job resume from its own checkpoint, and keeps a W&B run across restarts.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator, Mapping
from functools import cache
from importlib.resources import files
from typing import Any

from oellm.compiler.errors import Origin, Problem
from oellm.compiler.tree import KeyPath, origin_of
from oellm.compiler.wandb import wandb_args, wandb_exports
from oellm.compiler.words import Word, long_options

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


OVERRIDE = "override_opt_param_scheduler"
USE_CHECKPOINT = "use_checkpoint_opt_param_scheduler"


class Megatron:
    def torchrun(self, launch: str) -> bool:
        return launch == "per_node"

    def launch_words(self, config: Mapping[str, Any], launch: str) -> list[Word]:
        backend = config["backend"]
        launcher = (
            _torchrun(config)
            if self.torchrun(launch)
            else list(map(Word, backend.get("launcher") or []))
        )
        # After torchrun's options the entrypoint starts a line of its own.
        words = [*launcher, Word(backend["entrypoint"], new_line=self.torchrun(launch))]
        args = {**backend["megatron"], **wandb_args(config)}
        resume = self.resume(config)
        if resume:
            del args["load"]  # chosen when the job starts: see _resume_values
        for token in megatron_argv(args):
            words.append(Word(token, new_line=token.startswith("--")))
        if resume:
            words.extend([Word("--load", True), Word("oellm_load", ref=True)])
        return words

    def values(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _resume_values(config)

    def exports(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return wandb_exports(config)

    def resume(self, config: Mapping[str, Any]) -> bool:
        return bool(_resume_values(config))

    def checks(
        self, config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
    ) -> Iterator[Problem]:
        """A pre-timeout signal and Megatron's handler for it go together; and Megatron
        refuses both scheduler flags at once."""
        args = config["backend"].get("megatron") or {}
        handler = args.get("exit_signal_handler")
        signal = config["slurm"]["sbatch"].get("signal")
        if handler and not signal:
            path: KeyPath = ("backend", "megatron", "exit_signal_handler")
            yield Problem(
                "Megatron's exit signal handler never runs without a signal before the time limit",
                origin_of(origins, path),
                key="backend.megatron.exit_signal_handler",
                hint="set slurm.sbatch.signal, e.g. 'TERM@300' (SIGTERM to the training, 300 s "
                "before the limit, time enough to save a checkpoint)",
            )
        if signal and not handler:
            yield Problem(
                f"signal {signal!r} would stop Megatron without saving a checkpoint",
                origin_of(origins, ("slurm", "sbatch", "signal")),
                key="slurm.sbatch.signal",
                hint="set backend.megatron.exit_signal_handler: true so training saves and exits",
            )
        if args.get(OVERRIDE) and args.get(USE_CHECKPOINT):
            yield Problem(
                f"{OVERRIDE} and {USE_CHECKPOINT} are both set; Megatron refuses that",
                origin_of(origins, ("backend", "megatron", OVERRIDE)),
                key=f"backend.megatron.{OVERRIDE}",
                hint=f"keep {OVERRIDE} to train with this job's schedule, or {USE_CHECKPOINT} "
                "to keep the checkpoint's",
            )


BACKEND = Megatron()


def _resume_values(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A Megatron job that loads another job's checkpoint (a decay stage loading its stable
    sibling) must resume from its own once it has saved one, or every restart would start the
    stage over. The script picks `--load` when it starts: its own `save` folder once Megatron's
    `latest_checkpointed_iteration.txt` is there, the configured `load` until then."""
    args = config["backend"]["megatron"]
    load, save = args.get("load"), args.get("save")
    if not load or not save or load == save:
        return []
    return [("oellm_save", str(save)), ("oellm_load_initial", str(load))]


def _torchrun(config: Mapping[str, Any]) -> list[Word]:
    """torchrun, one per node: c10d rendezvous at MASTER_ADDR:MASTER_PORT, which the script
    derives. c10d assigns the node ranks, so no per-node value has to reach the argv (the
    batch shell runs on the first node only and cannot know the others' SLURM_NODEID)."""
    torchrun = config["backend"].get("torchrun") or {}
    nproc = torchrun.get("nproc_per_node") or config["slurm"].get("gpus_per_node")
    words = [Word(token) for token in torchrun.get("command") or ["torchrun"]]
    words += [
        Word("--nnodes", True),
        Word("oellm_nnodes", ref=True),
        Word("--nproc_per_node", True),
        Word(str(nproc)),
        Word("--rdzv_backend", True),
        Word("c10d"),
        Word("--rdzv_endpoint", True),
        Word("oellm_rdzv_endpoint", ref=True),
        Word("--rdzv_id", True),
        Word("oellm_rdzv_id", ref=True),
        Word("--max_restarts", True),
        Word(str(torchrun.get("max_restarts", 0))),
    ]
    words += long_options(torchrun.get("options") or {}, dashes=False)
    return words
