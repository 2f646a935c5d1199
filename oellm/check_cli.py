"""`oellm check BUNDLE`: a preflight on the cluster's login node, before the first reconcile.

It asks the site's sbatch about each distinct set of `#SBATCH` lines (`sbatch --test-only`
queues nothing), looks for the paths the jobs read (the lockfile's `reads`), and says how many
node-hours and GPU-hours the sweep asks for. Exit 0: nothing found; 1: something was found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from oellm.bundle_files import LOCK_NAME
from oellm.errors import EXIT_DIFFERENT, EXIT_OK, CommandError
from oellm.guard import guarded
from oellm.lockfile import Lock
from oellm.lockfile.codec import loads
from oellm.resources import directives, totals
from oellm.shell import run

SBATCH_TIMEOUT_S = 60.0
_SHOWN = 5
# Options that differ from job to job without changing what sbatch decides.
_PER_JOB = frozenset({"job-name", "J", "output", "o", "error", "e", "comment"})


@dataclass(frozen=True)
class Shape:
    """Jobs whose scripts carry the same `#SBATCH` lines: sbatch judges them alike."""

    script: str  # the bundle path of the one script that is asked about
    array: bool
    jobs: tuple[str, ...]


def shapes(lock: Lock, text: Any) -> list[Shape]:
    """Group the jobs by the sha256 of their scripts' `#SBATCH` lines (per-job names and log
    paths left out), in lockfile order. `text(path)` reads a script of the bundle."""
    groups: dict[str, tuple[str, bool, list[str]]] = {}
    keys: dict[str, str] = {}
    for job in lock.jobs:
        group = lock.arrays.get(job.array_group) if job.array_group else None
        path = group.script if group else job.script
        key = keys.get(path)
        if key is None:
            kept = [f"{n}={v}" for n, v in directives(text(path)) if n not in _PER_JOB]
            key = keys[path] = hashlib.sha256("\n".join(kept).encode()).hexdigest()
        groups.setdefault(key, (path, bool(group), []))[2].append(job.name)
    return [Shape(path, array, tuple(names)) for path, array, names in groups.values()]


def _jobs(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    more = len(names) - _SHOWN
    return f"{len(names)} job{'s' if len(names) != 1 else ''}: {shown}" + (
        f" and {more} more" if more > 0 else ""
    )


def ask_sbatch(bundle: Path, shape: Shape) -> str | None:
    """sbatch's refusal of the shape's script, or None when it would take it."""
    # From the folder that holds the bundle, as the reconciler submits (relative paths in the
    # scripts are relative to it).
    script = bundle.resolve() / shape.script
    argv = ["sbatch", "--test-only", *(["--array=0"] if shape.array else []), str(script)]
    try:
        done = run(argv, timeout=SBATCH_TIMEOUT_S, cwd=bundle.resolve().parent)
    except CommandError as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return "\n".join(said) or f"sbatch exited {done.returncode}"


def missing_reads(bundle: Path, lock: Lock) -> dict[str, list[str]]:
    """Each path some job reads that does not exist -> the jobs that read it."""
    root = bundle.resolve().parent
    readers: dict[str, list[str]] = {}
    for job in lock.jobs:
        for path in job.reads:
            readers.setdefault(path, []).append(job.name)
    out: dict[str, list[str]] = {}
    for path, names in readers.items():
        full = Path(path).expanduser()
        if not full.is_absolute():
            full = root / full
        if not full.exists():
            out[path] = names
    return out


@click.command("check")
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False))
@click.option("--skip-sbatch", is_flag=True, help="Do not ask sbatch (on a machine without SLURM).")
@guarded
def check_command(bundle: Path, skip_sbatch: bool) -> int:
    """Preflight a compiled bundle on the cluster: would sbatch take each script, do the
    paths the jobs read exist, and how many node-hours and GPU-hours does it ask for.

    \b
    Nothing is submitted: `sbatch --test-only` queues nothing. Exit 0 when all is well,
    1 when something was found, 2 on a usage error.
    """
    from oellm.reconciler.bundle import load_bundle

    load_bundle(bundle)  # a bundle that breaks its contract is a usage error (exit 2)
    lock = loads((bundle / LOCK_NAME).read_bytes(), str(bundle / LOCK_NAME))

    def text(path: str) -> str:
        return (bundle / path).read_text(encoding="utf-8")

    found = 0
    if skip_sbatch:
        click.echo("sbatch: not asked (--skip-sbatch)")
    else:
        kinds = shapes(lock, text)
        refused = 0
        for shape in kinds:
            said = ask_sbatch(bundle, shape)
            if said is not None:
                refused += 1
                click.echo(f"sbatch refuses {shape.script} ({_jobs(shape.jobs)}):")
                click.echo("  " + said.replace("\n", "\n  "))
        found += refused
        s = "s" if len(kinds) != 1 else ""
        click.echo(
            f"sbatch: {len(kinds) - refused} of {len(kinds)} distinct script shape{s} accepted"
        )
    missing = missing_reads(bundle, lock)
    for path, names in sorted(missing.items()):
        click.echo(f"missing: {path} (read by {_jobs(names)})")
    found += len(missing)
    recorded = sum(len(j.reads) for j in lock.jobs)
    if not recorded:
        click.echo("paths: no job reads a data, tokenizer, image or checkpoint path")
    elif not missing:
        click.echo(f"paths: all present ({recorded} reads)")
    click.echo(totals(lock, text).line())
    return EXIT_DIFFERENT if found else EXIT_OK
