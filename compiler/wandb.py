"""Weights & Biases runs that survive restarts: a Megatron job that logs to W&B gets a run id
of its own, the same for every attempt and chain link of the job, so W&B continues one run
instead of starting a new one after each TIMEOUT or NODE_FAIL.

Megatron's `wandb.init` passes neither `id` nor `resume` (megatron/training/global_vars.py), so
W&B takes them from `WANDB_RUN_ID` and `WANDB_RESUME`; `allow` resumes the run when the id
exists and starts it with that id when it does not.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from typing import Any


def enabled(config: Mapping[str, Any]) -> bool:
    backend = config["backend"]
    if backend.get("kind") != "megatron":
        return False
    return bool((backend.get("megatron") or {}).get("wandb_project"))


def run_id(config: Mapping[str, Any]) -> str:
    """The job's W&B run id, from its resolved config (which holds the project and job names).

    The id reaches the script, so it cannot be a hash of the script (that would contain
    itself); the resolved config is what the script is rendered from, without the id. Attempts
    and chain links run the same config, so they share the id; a changed config (a new script)
    starts a new run. 32 hex digits: W&B ids must avoid `/`, `:` and the like."""
    text = json.dumps(config, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def wandb_exports(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`WANDB_RUN_ID` and `WANDB_RESUME` for a job that logs to W&B (a config's own values win)."""
    if not enabled(config):
        return []
    return [("WANDB_RUN_ID", run_id(config)), ("WANDB_RESUME", "allow")]


def wandb_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """Megatron arguments to add: the run's display name is the job's name unless set."""
    if not enabled(config):
        return {}
    args = config["backend"]["megatron"]
    return {} if args.get("wandb_exp_name") else {"wandb_exp_name": config["job"]["name"]}


def wandb_lock(config: Mapping[str, Any]) -> dict[str, str] | None:
    """What the reconciler needs to sync the job's offline runs (`oellm reconcile
    --sync-wandb`): the run id and the folder Megatron gives `wandb.init(dir=...)`, which is
    `wandb_save_dir`, else `<save>/wandb` (megatron/training/global_vars.py). None without
    W&B, or without either folder."""
    if not enabled(config):
        return None
    args = config["backend"]["megatron"]
    folder = args.get("wandb_save_dir") or (
        posixpath.join(str(args["save"]), "wandb") if args.get("save") else None
    )
    if not folder:
        return None
    return {"dir": str(folder), "run_id": run_id(config)}
