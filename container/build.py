"""Apptainer definitions of the Megatron training images (CUDA and ROCm), and the command that
builds one.

Pure: `render_definition` fills a template shipped beside this module, quoting every value that
lands in the definition's shell sections; `build_argv` only composes the command. The CLI
(`oellm container`) runs it through the package's one door to the shell.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from oellm.errors import OellmError
from oellm.templating import jinja_env

RUNTIMES = ("apptainer", "singularity")
# Header lines and %labels are read by the runtime, not by a shell: no quoting exists there,
# so a value must be one printable word (labels may hold spaces, not line breaks).
_HEADER_WORD = re.compile(r"[^\s\"'\\]+")


class ContainerError(OellmError):
    """A bad request (unknown variant, a value a definition cannot hold); the CLI exits 2."""


@dataclass(frozen=True)
class Variant:
    """One training image: its template and the defaults a build may override."""

    name: str
    template: str
    base: str
    megatron_repo: str
    summary: str
    packages: tuple[str, ...] = field(default=())


# Python packages Megatron-LM's GPT training uses that the vendor PyTorch images lack
# (tokenizers, logging); the vendor images bring torch, Transformer Engine or its ROCm port.
_PACKAGES = ("transformers", "sentencepiece", "tiktoken", "nltk", "wandb")

VARIANTS: dict[str, Variant] = {
    "cuda": Variant(
        name="cuda",
        template="megatron-cuda.def.j2",
        # NVIDIA's PyTorch image (multi-arch: x86_64 and aarch64 for GH200) with Transformer
        # Engine, Apex and NCCL.
        base="docker://nvcr.io/nvidia/pytorch:25.08-py3",
        megatron_repo="https://github.com/NVIDIA/Megatron-LM.git",
        summary="NVIDIA GPUs (Leonardo, JUWELS Booster, JUPITER, MareNostrum 5, Snellius)",
        packages=_PACKAGES,
    ),
    "rocm": Variant(
        name="rocm",
        template="megatron-rocm.def.j2",
        # On LUMI prefer one of the site's PyTorch images as base
        # (localimage:/appl/local/containers/sif-images/...): they carry the RCCL plugin for
        # Slingshot (aws-ofi-rccl); a plain ROCm image talks over TCP sockets only.
        base="docker://rocm/pytorch:latest",
        megatron_repo="https://github.com/ROCm/Megatron-LM.git",
        summary="AMD GPUs (LUMI)",
        packages=_PACKAGES,
    ),
}


@dataclass(frozen=True)
class Request:
    """What to put into a definition; None takes the variant's default."""

    variant: str
    base: str | None = None
    megatron_repo: str | None = None
    megatron_ref: str = "main"
    packages: Sequence[str] = ()


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ContainerError(
            f"no image variant '{name}'", hint=f"choose one of: {', '.join(VARIANTS)}"
        ) from None


def bootstrap(base: str) -> tuple[str, str]:
    """The definition header for a base image: `docker://REF` or a bare registry reference
    pulls from a registry; `localimage:PATH` or a path to a .sif file starts from a local image."""
    if base.startswith("docker://"):
        agent, source = "docker", base.removeprefix("docker://")
    elif base.startswith("localimage:"):
        agent, source = "localimage", base.removeprefix("localimage:")
    elif base.endswith(".sif") or base.startswith(("/", "./", "../")):
        agent, source = "localimage", base
    else:
        agent, source = "docker", base
    if not _HEADER_WORD.fullmatch(source):
        raise ContainerError(
            f"base image {base!r} cannot be written in a definition header",
            hint="a registry reference or a path, without spaces or quotes",
        )
    return agent, source


def render_definition(request: Request) -> str:
    """The Apptainer definition text for `request`."""
    chosen = variant(request.variant)
    agent, source = bootstrap(request.base or chosen.base)
    repo = request.megatron_repo or chosen.megatron_repo
    for what, value in (
        ("Megatron-LM repository", repo),
        ("Megatron-LM ref", request.megatron_ref),
    ):
        if not _HEADER_WORD.fullmatch(value):
            raise ContainerError(f"{what} {value!r} must be one word without quotes")
    packages = [*chosen.packages, *request.packages]
    for package in packages:
        if not package or "\n" in package:
            raise ContainerError(f"package {package!r} is not a pip requirement")
    template = _environment().get_template(chosen.template)
    return template.render(
        variant=chosen,
        agent=agent,
        source=source,
        repo=repo,
        ref=request.megatron_ref,
        packages=packages,
    )


def build_argv(
    runtime: str,
    definition: Path,
    image: Path,
    *,
    fakeroot: bool = False,
    force: bool = False,
) -> list[str]:
    """`apptainer build [--fakeroot] [--force] IMAGE DEFINITION` (singularity alike)."""
    if runtime not in RUNTIMES:
        raise ContainerError(f"unknown runtime '{runtime}'", hint=f"one of: {', '.join(RUNTIMES)}")
    argv = [runtime, "build"]
    if fakeroot:
        argv.append("--fakeroot")
    if force:
        argv.append("--force")
    return [*argv, str(image), str(definition)]


@functools.cache
def _environment() -> jinja2.Environment:
    # Values in %post are shell words: quoted once, as in the job scripts.
    return jinja_env("oellm.container", {"q": shlex.quote})
