"""The paths a job reads that must exist before it starts: its data, tokenizer, container
image and a checkpoint it loads, converts or evaluates that no job of the bundle writes.
Recorded per job in the lockfile (`reads`), so that `oellm check` can look for them on the
cluster without the config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Megatron's data arguments name file prefixes: the dataset is PREFIX.bin and PREFIX.idx.
_PREFIX_ARGS = ("data_path", "train_data_path", "valid_data_path", "test_data_path")
_FILE_ARGS = ("data_args_path", "per_split_data_args_path", "vocab_file", "merge_file")
_CHECKPOINT_ARGS = ("load", "pretrained_checkpoint")
_PATHS = ("/", "./", "../", "~")


def job_reads(config: Mapping[str, Any], written: Iterable[str]) -> list[str]:
    """Sorted paths; `written` are folders that jobs of the bundle write (the job's own and its
    siblings' output dirs): a checkpoint below one of them is produced, not read."""
    out: set[str] = set()
    backend = config.get("backend") or {}
    folders = [w.rstrip("/") for w in written if w]
    megatron = backend.get("megatron") if backend.get("kind") == "megatron" else None
    if isinstance(megatron, dict):
        for arg in _PREFIX_ARGS:
            for prefix in _prefixes(megatron.get(arg)):
                out.update((prefix + ".bin", prefix + ".idx"))
        for arg in _FILE_ARGS:
            out.update(_texts(megatron.get(arg)))
        model = megatron.get("tokenizer_model")
        # A Hugging Face tokenizer may be a hub name (`gpt2`, `org/name`), not a path.
        hub = megatron.get("tokenizer_type") == "HuggingFaceTokenizer"
        for text in _texts(model):
            if not hub or text.startswith(_PATHS):
                out.add(text)
        save = megatron.get("save")
        for arg in _CHECKPOINT_ARGS:
            for text in _texts(megatron.get(arg)):
                if text != save and not any(_below(text, f) for f in folders):
                    out.add(text)
    # A checkpoint to convert or evaluate that no job of the bundle writes must exist already.
    # lm_eval's `pretrained` may be a hub name (`gpt2`, `org/name`), not a path.
    convert = backend.get("megatron_to_hf") if backend.get("kind") == "megatron_to_hf" else None
    evaluate = backend.get("lm_eval") if backend.get("kind") == "lm_eval" else None
    given = [convert.get("checkpoint")] if isinstance(convert, dict) else []
    if isinstance(evaluate, dict):
        given += [p for p in _texts(evaluate.get("pretrained")) if p.startswith(_PATHS)]
    for text in _texts(given):
        if not any(_below(text, f) for f in folders):
            out.add(text)
    container = config.get("container") or {}
    if container.get("runtime") not in (None, "none"):
        out.update(_texts(container.get("image")))
    return sorted(out)


def _below(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _prefixes(value: Any) -> list[str]:
    """Megatron's blend syntax: `[weight] prefix [weight] prefix ...`; weights are numbers."""
    words: list[str] = []
    for text in _texts(value):
        words.extend(text.split())
    return [w for w in words if not _number(w)]


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
