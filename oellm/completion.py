"""Shell completion (click's `_OELLM_COMPLETE=bash_source oellm`): job names from the bundle
argument's lockfile, config group options after `GROUP=` (`slurm=<TAB>` -> the presets), and
files and folders where a command takes them. Completion never fails: a bundle that cannot
be read completes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.shell_completion import CompletionItem

LOCK_NAME = "plan.lock.json"


def job_names(bundle: object) -> list[str]:
    try:
        data = json.loads((Path(str(bundle)) / LOCK_NAME).read_text(encoding="utf-8"))
        return [str(job["name"]) for job in data["jobs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def complete_jobs(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The jobs of the command's BUNDLE argument that start with what is typed."""
    return [
        CompletionItem(name)
        for name in job_names(ctx.params.get("bundle"))
        if name.startswith(incomplete)
    ]


def complete_jobs_or_bundles(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`oellm status BUNDLE ...`: more bundle folders, or jobs of the first bundle."""
    return [*complete_jobs(ctx, param, incomplete), CompletionItem(incomplete, type="dir")]


def complete_compile_args(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`oellm compile [EXPERIMENT.yaml] [OVERRIDES]`: after `GROUP=`, the options of that
    config group (the built-in library, --config-dir folders and those beside the experiment);
    otherwise the experiment file, and the config groups as `GROUP=`."""
    from oellm.compiler.library import Library

    earlier = [str(a) for a in ctx.params.get("args") or ()]
    experiment = Path(earlier[0]) if earlier and "=" not in earlier[0] else None
    dirs = [Path(str(d)) for d in ctx.params.get("config_dirs") or ()]
    library = Library.for_experiment(experiment, dirs)
    key, equals, typed = incomplete.partition("=")
    if equals:
        group = key.lstrip("+~")
        return [
            CompletionItem(f"{key}={option}")
            for option in library.options(group)
            if option.startswith(typed)
        ]
    groups = sorted(
        {
            folder.name
            for root in library.dirs
            if root.is_dir()
            for folder in root.iterdir()
            if folder.is_dir()
            and folder.name not in ("experiments", "__pycache__")
            and any(folder.glob("*.yaml"))
        }
    )
    items = [CompletionItem(f"{g}=", type="plain") for g in groups if g.startswith(incomplete)]
    if experiment is None:
        items.append(CompletionItem(incomplete, type="file"))
    return items
