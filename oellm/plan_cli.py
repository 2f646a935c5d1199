"""`oellm plan`: the stages and jobs of an experiment (compiled in memory) or of a compiled
bundle, as text boxes with the resources they take, or as a graph (dot, mermaid). Registered
by `oellm.cli`.
"""

from __future__ import annotations

from pathlib import Path

import click

from oellm.bundle_files import LOCK_NAME
from oellm.compile_cli import Progress
from oellm.errors import EXIT_OK
from oellm.guard import guarded
from oellm.options import compile_request, config_source_options


@click.command("plan")
@click.argument("args", nargs=-1, metavar="EXPERIMENT.yaml|BUNDLE [OVERRIDES]...")
@config_source_options(
    "Plan an experiment of the library.", "Extra config library folder (repeatable)."
)
@click.option(
    "--max-jobs-per-stage",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Jobs listed in each stage box.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "dot", "mermaid"]),
    default="text",
    show_default=True,
    help="Text boxes, or a graph of stages and jobs to draw.",
)
@guarded
def plan_command(
    args: tuple[str, ...],
    config_ref: str | None,
    config_dirs: tuple[Path, ...],
    max_jobs_per_stage: int,
    fmt: str,
) -> int:
    """Show the plan of an experiment (compiled in memory) or of a compiled bundle.

    \b
    oellm plan exp.yaml backend.megatron.lr=1e-4
    oellm plan bundle/ --format dot | dot -Tpng > plan.png
    oellm plan bundle/ --format mermaid
    """
    from oellm.compiler.pipeline import compile_bundle
    from oellm.compiler.plan import plan_dot, plan_mermaid, plan_text
    from oellm.lockfile.codec import loads

    if args and config_ref is None and Path(args[0]).is_dir():
        if len(args) > 1:
            raise click.UsageError("overrides apply to experiments, not to a compiled bundle")
        lock_path = Path(args[0]) / LOCK_NAME
        if not lock_path.is_file():
            raise click.UsageError(f"'{args[0]}' holds no {LOCK_NAME}")
        lock = loads(lock_path.read_bytes(), str(lock_path))
        folder = Path(args[0])

        def script(path: str) -> str:
            return (folder / path).read_text(encoding="utf-8")
    else:
        compiled = compile_bundle(compile_request(args, config_ref, config_dirs), Progress())
        lock = compiled.lock

        def script(path: str) -> str:
            return compiled.files[path].decode("utf-8")

    if fmt == "dot":
        click.echo(plan_dot(lock), nl=False)
    elif fmt == "mermaid":
        click.echo(plan_mermaid(lock), nl=False)
    else:
        from oellm.resources import totals

        click.echo(plan_text(lock, max_jobs_per_stage), nl=False)
        click.echo(totals(lock, script).line())
    return EXIT_OK
