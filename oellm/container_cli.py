"""`oellm container render|build`: the Apptainer definitions of the Megatron training images.

`render` prints a definition (or writes it to a file). `build` writes the definition beside the
image (IMAGE.def, so the recipe travels with the image) and runs `apptainer build` or
`singularity build` through the one door to the shell. Exit codes: 0 done; 1 the build ran and
failed (its output is shown); 2 a usage error, or no container runtime on this machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from oellm.container.build import (
    RUNTIMES,
    VARIANTS,
    ContainerError,
    Request,
    build_argv,
    render_definition,
)
from oellm.errors import EXIT_DIFFERENT, EXIT_OK, CommandError
from oellm.guard import guarded
from oellm.shell import run

EXIT_FAILED = EXIT_DIFFERENT  # the build ran and failed
# Pulling a vendor PyTorch image and installing into it takes minutes to an hour.
DEFAULT_BUILD_TIMEOUT_S = 4 * 3600.0

_VARIANT = click.argument("variant", type=click.Choice(sorted(VARIANTS)))
_OPTIONS = [
    click.option(
        "--base",
        metavar="IMAGE",
        help="Base image: docker://REF, a registry reference, localimage:PATH or a .sif path "
        "(default: the variant's vendor PyTorch image).",
    ),
    click.option("--megatron-repo", metavar="URL", help="Megatron-LM git repository to clone."),
    click.option(
        "--megatron-ref",
        metavar="REF",
        default="main",
        show_default=True,
        help="Branch, tag or commit of Megatron-LM; pin one for a reproducible image.",
    ),
    click.option(
        "--pip",
        "packages",
        multiple=True,
        metavar="REQUIREMENT",
        help="An extra pip requirement to install (repeatable).",
    ),
]


def _request_options(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def _request(
    variant: str,
    base: str | None,
    megatron_repo: str | None,
    megatron_ref: str,
    packages: tuple[str, ...],
) -> Request:
    return Request(variant, base, megatron_repo, megatron_ref, packages)


@click.group("container")
def container_command() -> None:
    """Render or build the Megatron training images (Apptainer definitions).

    \b
    Variants: cuda (NVIDIA GPUs), rocm (AMD GPUs, LUMI).
      oellm container render cuda -o megatron-cuda.def
      oellm container build cuda "$CONTAINER_CACHE_DIR/oellm-megatron-cuda.sif"
    """


@container_command.command("render")
@_VARIANT
@_request_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the definition to this file instead of standard output.",
)
@guarded
def render_command(
    variant: str,
    base: str | None,
    megatron_repo: str | None,
    megatron_ref: str,
    packages: tuple[str, ...],
    output: Path | None,
) -> int:
    """Print the Apptainer definition of a training image."""
    text = render_definition(_request(variant, base, megatron_repo, megatron_ref, packages))
    if output is None:
        click.echo(text, nl=False)
        return EXIT_OK
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}")
    return EXIT_OK


@container_command.command("build")
@_VARIANT
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@_request_options
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    help="Container runtime (default: apptainer, else singularity, whichever is installed).",
)
@click.option("--fakeroot", is_flag=True, help="Build as an unprivileged user (--fakeroot).")
@click.option("--force", is_flag=True, help="Overwrite an existing image.")
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_BUILD_TIMEOUT_S,
    show_default=True,
    help="Give up after this many seconds.",
)
@guarded
def build_command(
    variant: str,
    image: Path,
    base: str | None,
    megatron_repo: str | None,
    megatron_ref: str,
    packages: tuple[str, ...],
    runtime: str | None,
    fakeroot: bool,
    force: bool,
    timeout: float,
) -> int:
    """Build a training image IMAGE (.sif) with apptainer or singularity."""
    text = render_definition(_request(variant, base, megatron_repo, megatron_ref, packages))
    found = _runtime(runtime)
    if image.exists() and not force:
        raise ContainerError(f"{image} exists", hint="pass --force to overwrite it")
    definition = image.with_name(image.name + ".def")
    argv = build_argv(found, definition, image, fakeroot=fakeroot, force=force)
    image.parent.mkdir(parents=True, exist_ok=True)
    definition.write_text(text, encoding="utf-8")
    click.echo(f"wrote {definition}; running: {' '.join(argv)}", err=True)
    try:
        done = run(argv, timeout=timeout)
    except CommandError as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_FAILED
    output = (done.stdout + done.stderr).rstrip()
    if done.returncode != 0:
        click.echo(output, err=True)
        click.echo(f"error: {argv[0]} build failed (exit {done.returncode})", err=True)
        return EXIT_FAILED
    if output:
        click.echo(output, err=True)
    click.echo(f"built {image}")
    return EXIT_OK


def _runtime(wanted: str | None) -> str:
    """The runtime to build with: the one asked for, or the first of RUNTIMES installed."""
    for name in (wanted,) if wanted else RUNTIMES:
        if name and shutil.which(name):
            return name
    asked = wanted or " or ".join(RUNTIMES)
    raise ContainerError(
        f"{asked} is not installed on this machine",
        hint="render the definition (`oellm container render`) and build it where apptainer "
        "runs, e.g. on a compute node of the cluster",
    )
