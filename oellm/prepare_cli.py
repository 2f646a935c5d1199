"""`oellm prepare BUNDLE`: make a compiled bundle submittable by hand with plain `sbatch`.

SLURM opens a job's `--output` before its script runs and does not create the folder, so the
first hand submission of a fresh bundle would fail without a log. This creates every job's log
folder and output dir, as the reconciler does before it submits; running it again is harmless.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from oellm.errors import EXIT_OK
from oellm.guard import guarded


@click.command("prepare")
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
@guarded
def prepare_command(bundle: Path) -> int:
    """Create the log folder and output dir of every job of BUNDLE, so that its scripts can be
    submitted by hand (`sbatch BUNDLE/jobs/JOB.sbatch`, from the folder that holds BUNDLE).

    \b
    Prints each folder it created; nothing is changed when they all exist.
    Exit codes: 0 done, 2 not a bundle or a folder that cannot be created.
    """
    from oellm.reconciler.bundle import load_bundle
    from oellm.reconciler.folders import make_job_folders

    # Only paths are needed: a script edited by hand still gets its folders.
    loaded = load_bundle(bundle, check_scripts=False)
    created = [folder for job in loaded.jobs for folder in make_job_folders(loaded, job)]
    for folder in created:
        click.echo(f"created {_shown(folder)}")
    if not created:
        click.echo(f"{bundle}: every job's folders exist already")
    root = loaded.root
    where = "this folder" if root == Path.cwd().resolve() else str(root)
    click.echo(f"submit by hand from {where}: relative paths in the bundle start there")
    return EXIT_OK


def _shown(folder: Path) -> str:
    """A folder relative to the current one when it lies below it, else absolute."""
    relative = os.path.relpath(folder, Path.cwd())
    return folder.as_posix() if relative.startswith("..") else relative
