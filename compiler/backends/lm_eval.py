"""The `lm_eval` backend: EleutherAI's lm-evaluation-harness on a Hugging Face checkpoint.

The launch line is `lm_eval --model hf --model_args pretrained=PATH,k=v --tasks a,b ...`, the
harness's own command line (without a subcommand its CLI inserts `run`, so older versions read
it too). The checkpoint is usually the `output_dir` of a `megatron_to_hf` sibling; the sibling
reference makes the evaluation depend on the conversion. Offline compute nodes need
`HF_HUB_OFFLINE`/`HF_DATASETS_OFFLINE` and a filled `HF_HOME`: `config/backend/lm_eval.yaml`
sets them in `backend.env`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from oellm.compiler.errors import Origin, Problem
from oellm.compiler.tree import KeyPath, origin_of
from oellm.compiler.words import Word, long_options, scalar

from .one_task import one_task_problems
from .plain import Plain

COMMAND = ("lm_eval",)
MODEL = "hf"


def model_args(settings: Mapping[str, Any]) -> str:
    """`pretrained=PATH,key=value,...`: the harness splits this text at commas, then at `=`."""
    pairs = [("pretrained", settings["pretrained"])]
    pairs += [(k, v) for k, v in (settings.get("model_args") or {}).items() if v is not None]
    return ",".join(f"{key}={scalar(value)}" for key, value in pairs)


class LmEval(Plain):
    def launch_words(self, config: Mapping[str, Any], launch: str) -> list[Word]:
        """`--flag=value` words, so that a value starting with a dash stays a value."""
        settings = config["backend"]["lm_eval"]
        words = [Word(token) for token in settings.get("command") or COMMAND]
        words.append(Word(f"--model={settings.get('model') or MODEL}", True))
        words.append(Word(f"--model_args={model_args(settings)}", True))
        words.append(Word(f"--tasks={','.join(settings['tasks'])}", True))
        for key in ("num_fewshot", "batch_size", "limit", "device", "output_path"):
            value = settings.get(key)
            if value is not None:
                words.append(Word(f"--{key}={scalar(value)}", True))
        for flag in ("log_samples", "trust_remote_code"):
            if settings.get(flag):
                words.append(Word(f"--{flag}", True))
        words += long_options(settings.get("options") or {}, dashes=False)
        return words

    def checks(
        self, config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
    ) -> Iterator[Problem]:
        """The harness splits --model_args and --tasks at commas: a comma inside one value
        would make two. And --log_samples without --output_path is refused by the harness."""
        yield from one_task_problems(config, origins, "lm_eval")
        settings = config["backend"]["lm_eval"]
        base: KeyPath = ("backend", "lm_eval")
        values: list[tuple[KeyPath, Any]] = [((*base, "pretrained"), settings["pretrained"])]
        for key, value in (settings.get("model_args") or {}).items():
            values.append(((*base, "model_args", key), value))
        for path, value in values:
            if isinstance(value, str) and "," in value:
                yield Problem(
                    f"{value!r} holds a comma, where lm_eval splits --model_args",
                    origin_of(origins, path),
                    key=".".join(map(str, path)),
                    hint="rename the folder or file without commas",
                )
        for index, task in enumerate(settings["tasks"]):
            if "," in task:
                yield Problem(
                    f"task {task!r} holds a comma, where lm_eval splits --tasks",
                    origin_of(origins, (*base, "tasks", index)),
                    key=f"backend.lm_eval.tasks.{index}",
                    hint="list each task as an item of its own",
                )
        if settings.get("log_samples") and not settings.get("output_path"):
            yield Problem(
                "lm_eval's --log_samples needs --output_path",
                origin_of(origins, (*base, "log_samples")),
                key="backend.lm_eval.log_samples",
                hint="set backend.lm_eval.output_path, e.g. ${job.base_output_dir}/lm_eval",
            )


BACKEND = LmEval()
