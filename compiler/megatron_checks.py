"""Checks across Megatron jobs of one bundle: a job that loads another job's checkpoint.

Megatron's OptimizerParamScheduler compares the schedule it was given with the one stored in
the checkpoint it loads (`load_state_dict` -> `_check_and_set`) and asserts on any difference
unless `--override-opt-param-scheduler` (train with the new schedule) or
`--use-checkpoint-opt-param-scheduler` (keep the stored one) is set. A decay stage that loads its
stable sibling changes the schedule on purpose, so without a flag it would die on its first
start, after hours in the queue; this module finds that at compile time.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, Origin, Problem
from .load import Path_
from .megatron import megatron_default
from .tree import origin_of

# The values `_check_and_set` compares, in the order Megatron checks them, with the arguments
# they come from (megatron/training/training.py: get_optimizer_param_scheduler).
_FIELDS: tuple[tuple[str, str], ...] = (
    ("max_lr", "lr"),
    ("min_lr", "min_lr"),
    ("lr_warmup_steps", "lr_warmup_iters / lr_warmup_fraction / lr_warmup_samples"),
    ("lr_decay_steps", "lr_decay_iters or train_iters, x global_batch_size; or lr_decay_samples"),
    ("lr_decay_style", "lr_decay_style"),
    ("start_wd", "weight_decay / start_weight_decay"),
    ("end_wd", "weight_decay / end_weight_decay"),
    ("wd_incr_steps", "train_iters x global_batch_size, or train_samples"),
    ("wd_incr_style", "weight_decay_incr_style"),
)

OVERRIDE = "override_opt_param_scheduler"
USE_CHECKPOINT = "use_checkpoint_opt_param_scheduler"


@dataclass(frozen=True)
class Loader:
    """What one Megatron job loads and saves, and its schedule as Megatron's scheduler sees it."""

    name: str
    load: str | None
    save: str | None
    schedule: dict[str, Any]
    # Megatron loads no scheduler state under --finetune or --no-load-optim, and asserts on
    # nothing when a flag says which schedule wins.
    checks_schedule: bool
    origin: Origin | None


def _value(args: Mapping[str, Any], dest: str) -> Any:
    value = args.get(dest)
    return megatron_default(dest) if value is None else value


def _steps(iters: Any, batch: Any) -> Any:
    """Scheduler steps count samples: iterations x global batch size. Without a global batch
    size in the config (Megatron derives it from the data-parallel size) compare iterations."""
    return iters * batch if isinstance(iters, int) and isinstance(batch, int) else iters


def scheduler_state(args: Mapping[str, Any]) -> dict[str, Any]:
    """The values Megatron's scheduler stores in a checkpoint and compares on load."""
    batch = _value(args, "global_batch_size")
    warmup_fraction = _value(args, "lr_warmup_fraction")
    if _value(args, "train_iters"):
        iters = _value(args, "train_iters")
        decay = _steps(_value(args, "lr_decay_iters") or iters, batch)
        wd_steps = _steps(iters, batch)
        warmup = _steps(_value(args, "lr_warmup_iters"), batch)
    else:
        samples = _value(args, "train_samples")
        decay = _value(args, "lr_decay_samples") or samples
        wd_steps = samples
        warmup = _value(args, "lr_warmup_samples")
    if warmup_fraction is not None and isinstance(decay, (int, float)):
        warmup = warmup_fraction * decay
    incr_style = _value(args, "weight_decay_incr_style")
    if incr_style == "constant":
        start_wd = end_wd = _value(args, "weight_decay")
    else:
        start_wd, end_wd = _value(args, "start_weight_decay"), _value(args, "end_weight_decay")
    return {
        "max_lr": _value(args, "lr"),
        "min_lr": _value(args, "min_lr"),
        "lr_warmup_steps": warmup,
        "lr_decay_steps": decay,
        "lr_decay_style": _value(args, "lr_decay_style"),
        "start_wd": start_wd,
        "end_wd": end_wd,
        "wd_incr_steps": wd_steps,
        "wd_incr_style": incr_style,
    }


def _folder(path: Any) -> str | None:
    return posixpath.normpath(str(path)) if path else None


def loader(name: str, config: Mapping[str, Any], origins: Mapping[Path_, Origin]) -> Loader | None:
    """The record of one job for `check_loads`; None for a job that is not Megatron's.

    Also refuses both flags at once, which Megatron's scheduler asserts on by itself."""
    backend = config["backend"]
    if backend.get("kind") != "megatron":
        return None
    args: Mapping[str, Any] = backend.get("megatron") or {}
    if args.get(OVERRIDE) and args.get(USE_CHECKPOINT):
        raise ConfigError(
            Problem(
                f"{OVERRIDE} and {USE_CHECKPOINT} are both set; Megatron refuses that",
                origin_of(origins, ("backend", "megatron", OVERRIDE)),
                key=f"backend.megatron.{OVERRIDE}",
                hint=f"keep {OVERRIDE} to train with this job's schedule, or {USE_CHECKPOINT} "
                "to keep the checkpoint's",
            )
        )
    checks = not (
        args.get(OVERRIDE)
        or args.get(USE_CHECKPOINT)
        or args.get("finetune")
        or args.get("no_load_optim")
    )
    return Loader(
        name=name,
        load=_folder(args.get("load")),
        save=_folder(args.get("save")),
        schedule=scheduler_state(args),
        checks_schedule=checks,
        origin=origin_of(origins, ("backend", "megatron", "load")),
    )


def _show(value: Any) -> str:
    return repr(value)


def check_loads(loaders: list[Loader]) -> None:
    """Every job that loads the `save` folder of another job of the bundle (its sibling, or any
    job named by path) must either share that job's schedule or say which schedule wins.

    A job loading its own `save` (a restart, a chain link) compares equal values; a load from
    outside the bundle cannot be known at compile time and is not checked."""
    by_save = {job.save: job for job in loaders if job.save}
    problems: list[Problem] = []
    for job in loaders:
        if not job.checks_schedule or not job.load or job.load == job.save:
            continue
        source = by_save.get(job.load)
        if source is None:
            continue
        differ = [
            f"{field} {_show(source.schedule[field])} -> {_show(job.schedule[field])}"
            + ("" if given_by == field else f" (from {given_by})")
            for field, given_by in _FIELDS
            if source.schedule[field] != job.schedule[field]
        ]
        if not differ:
            continue
        problems.append(
            Problem(
                f"job '{job.name}' loads the checkpoint of job '{source.name}' with another "
                f"learning-rate schedule; Megatron's scheduler asserts when it loads it "
                f"(checkpoint -> this job): {'; '.join(differ)}",
                job.origin,
                key="backend.megatron.load",
                hint=f"set backend.megatron.{OVERRIDE}: true to train with this job's schedule "
                f"(what a decay stage wants), or {USE_CHECKPOINT}: true to keep the "
                "checkpoint's",
            )
        )
    if problems:
        raise ConfigError(problems)
