"""Backends: what a job runs once SLURM, srun and the container are set up.

Each backend is one module here with one object that satisfies `Backend`, listed in `BACKENDS`
under its `backend.kind`. The script plan (`compiler/script.py`) asks it for the words of the
launch line, the script variables and exports it needs, and whether the job picks its
checkpoint when it starts; `compiler/checks.py` asks it for the problems only it can see.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from oellm.compiler.errors import Origin, Problem
from oellm.compiler.tree import KeyPath
from oellm.compiler.words import Word

from . import bash, lm_eval, megatron, megatron_to_hf


class Backend(Protocol):
    def torchrun(self, launch: str) -> bool:
        """Whether the job starts torchrun under this launch mode (it then needs the node count,
        a rendezvous id and the GPUs per node)."""
        ...

    def launch_words(self, config: Mapping[str, Any], launch: str) -> list[Word]:
        """The program and its arguments, after srun and the container's words."""
        ...

    def values(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Script variables (name, value) the launch words refer to."""
        ...

    def exports(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Environment variables exported before the config's own `env` (which wins)."""
        ...

    def resume(self, config: Mapping[str, Any]) -> bool:
        """Whether the script chooses the checkpoint to load when it starts."""
        ...

    def checks(
        self, config: Mapping[str, Any], origins: Mapping[KeyPath, Origin]
    ) -> Iterator[Problem]:
        """What the schema cannot say about this backend's settings."""
        ...


BACKENDS: dict[str, Backend] = {
    "bash": bash.BACKEND,
    "megatron": megatron.BACKEND,
    "megatron_to_hf": megatron_to_hf.BACKEND,
    "lm_eval": lm_eval.BACKEND,
}


def backend_of(config: Mapping[str, Any]) -> Backend:
    """The backend of a validated config (the schema lists every kind of `BACKENDS`)."""
    return BACKENDS[config["backend"]["kind"]]
