"""A check shared by the backends that run one program (a converter, an evaluation harness):
srun must start it once. A cluster preset made for training starts one task per GPU
(`slurm.launch: per_gpu`) or per node, and each task would run the whole program, all of them
writing the same output folder."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from oellm.compiler.errors import Origin, Problem
from oellm.compiler.tree import KeyPath, origin_of

_COUNTS = ("nodes", "ntasks", "ntasks_per_node")


def one_task_problems(
    config: Mapping[str, Any], origins: Mapping[KeyPath, Origin], kind: str
) -> Iterator[Problem]:
    slurm = config["slurm"]
    if not slurm.get("use_srun", True):
        return
    if slurm.get("launch") == "per_gpu":
        yield Problem(
            f"per_gpu starts one task per GPU, and each would run the whole {kind} program",
            origin_of(origins, ("slurm", "launch")),
            key="slurm.launch",
            hint="run it as one task: slurm.launch: plain and slurm.sbatch.ntasks_per_node: 1",
        )
    sbatch = slurm["sbatch"]
    for name in _COUNTS:
        value = sbatch.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            yield Problem(
                f"{value} {name.replace('_', ' ')}: srun would run the {kind} program {value} "
                "times at once",
                origin_of(origins, ("slurm", "sbatch", name)),
                key=f"slurm.sbatch.{name}",
                hint=f"run it as one task: slurm.sbatch.{name}: 1",
            )
