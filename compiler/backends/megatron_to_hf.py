"""The `megatron_to_hf` backend: a Megatron checkpoint converted to a Hugging Face folder.

The conversion is a job of its own (a stage after training), not a step appended to the
training job: it needs one task and other resources than a multi-node torchrun job, it should
convert only the final checkpoint (a training job that saved and stopped before its time limit
also exits 0; the examples start the conversion by a condition on the final iteration), and a
failed conversion must not count against (or restart) training.

The converter is a configurable command. Megatron-LM's own `tools/checkpoint/convert.py` has no
Hugging Face saver for GPT models; Megatron-Bridge's `scripts/conversion/convert.sh export`
writes one (`--megatron-path <save>/iter_NNNNNNN --hf-path <folder> --hf-model <reference>`),
so its flag names are the defaults here. Megatron-Bridge wants the iteration folder, not the
save folder: with `iteration: latest` the job reads Megatron's tracker file when it starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from oellm.compiler.errors import Origin, Problem
from oellm.compiler.tree import KeyPath
from oellm.compiler.words import Word, long_options

from .one_task import one_task_problems
from .plain import Plain

CHECKPOINT_FLAG = "--megatron-path"
OUTPUT_FLAG = "--hf-path"

# Fixed script code (never config): $1 is the save folder, $2 the converter's option for the
# checkpoint, the rest the converter's argv, which gets `$2=<folder of the latest iteration>` as
# its last word. Megatron writes the tracker without a newline, as the iteration number or
# `release`, and names the folders iter_%07d.
LATEST_SHIM = (
    'tracker="$1/latest_checkpointed_iteration.txt"; '
    'iteration="$(cat -- "$tracker")" || exit 1; '
    'case "$iteration" in '
    'release) folder="$1/release" ;; '
    '""|*[!0-9]*) printf "oellm: %s holds %s, not an iteration\\n" "$tracker" "$iteration" >&2; '
    "exit 1 ;; "
    '*) folder="$(printf "%s/iter_%07d" "$1" "$((10#$iteration))")" ;; '
    "esac; "
    'flag="$2"; shift 2; exec "$@" "$flag=$folder"'
)


def iteration_folder(checkpoint: str, iteration: int) -> str:
    """Megatron's folder of one saved iteration."""
    return f"{checkpoint.rstrip('/')}/iter_{iteration:07d}"


class MegatronToHF(Plain):
    def launch_words(self, config: Mapping[str, Any], launch: str) -> list[Word]:
        """`--flag=value` words throughout, so that a value starting with a dash stays a value."""
        settings = config["backend"]["megatron_to_hf"]
        iteration = settings.get("iteration", "latest")
        checkpoint: str = settings["checkpoint"]
        checkpoint_flag: str = settings.get("checkpoint_flag") or CHECKPOINT_FLAG
        words: list[Word] = []
        if iteration == "latest":
            words += [Word("bash"), Word("-c"), Word(LATEST_SHIM), Word("oellm-convert")]
            words += [Word(checkpoint), Word(checkpoint_flag)]
        for index, token in enumerate(settings["command"]):
            words.append(Word(token, new_line=index == 0 and bool(words)))
        words += long_options(settings.get("options") or {}, dashes=False)
        output_flag: str = settings.get("output_flag") or OUTPUT_FLAG
        words.append(Word(f"{output_flag}={settings['output_dir']}", True))
        if iteration != "latest":
            if isinstance(iteration, int):
                checkpoint = iteration_folder(checkpoint, iteration)
            # With `latest` the shim adds this word when the job starts.
            words.append(Word(f"{checkpoint_flag}={checkpoint}", True))
        return words

    def checks(
        self, config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
    ) -> Iterator[Problem]:
        return one_task_problems(config, origins, "converter")


BACKEND = MegatronToHF()
