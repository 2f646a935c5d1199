"""The soak's experiment: short bash jobs in the shapes the reconciler treats apart (two
stages joined by a sibling reference, a chain, an array, jobs that fail once), each held back by
a start condition the soak meets when it releases the job, and one command revision per point
that a recompile bumps."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Point:
    """One sweep point: a job (or, for stable/decay, the pair) and its command revision."""

    kind: str  # stable (with its decay), chain, array, flaky
    index: int
    sleep: int
    rev: int = 0


@dataclass
class Experiment:
    run: str  # in every stage name, so no other bundle's jobs share a name or an array group
    markers: Path
    points: list[Point] = field(default_factory=list)

    def stage(self, kind: str) -> str:
        return {"stable": "st", "decay": "dc", "chain": "ch", "array": "ar", "flaky": "fl"}[
            kind
        ] + self.run

    @classmethod
    def make(cls, jobs: int, rng: random.Random, run: str, markers: Path) -> Experiment:
        pairs = max(1, jobs // 5)
        chains = max(1, jobs // 8)
        arrays = max(2, jobs // 5)
        flaky = max(1, jobs - 2 * pairs - chains - arrays)
        exp = cls(run, markers)
        for kind, count in (("stable", pairs), ("chain", chains), ("array", arrays)):
            exp.points += [Point(kind, i, rng.randint(1, 5)) for i in range(count)]
        exp.points += [Point("flaky", i, rng.randint(1, 5)) for i in range(flaky)]
        for point in exp.points:
            if point.kind == "chain":
                point.sleep = 1  # two links back to back: keep each short
        return exp

    def jobs_of(self, point: Point) -> list[str]:
        kinds = ("stable", "decay") if point.kind == "stable" else (point.kind,)
        return [f"{self.stage(kind)}_{point.index}" for kind in kinds]

    def names(self) -> set[str]:
        return {name for point in self.points for name in self.jobs_of(point)}

    def release(self, point: Point) -> None:
        """Meet the start condition of the point's jobs."""
        folder = self.markers / "go"
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.jobs_of(point):
            (folder / name).touch()

    def change_one(self, rng: random.Random) -> str:
        """A new command for one point (a stable job changes with its decay sibling)."""
        point = rng.choice(self.points)
        point.rev += 1
        return f"command of {' and '.join(self.jobs_of(point))} changed (rev {point.rev})"

    def config(self) -> dict[str, Any]:
        def configs(kind: str) -> list[dict[str, Any]]:
            return [
                {"vars.i": p.index, "vars.sleep": p.sleep, "vars.rev": p.rev}
                for p in self.points
                if p.kind == kind
            ]

        stable, decay = self.stage("stable"), self.stage("decay")
        command = (
            'echo "job ${job.name} rev ${vars.rev} after ${vars.up}"\n'
            'if [ "${vars.flaky}" = 1 ] && [ ! -e "${vars.markers}/${job.name}" ]; then\n'
            '  mkdir -p "${vars.markers}"; touch "${vars.markers}/${job.name}"; exit 1\n'
            "fi\n"
            "sleep ${vars.sleep}\n"
        )
        return {
            "project": {"name": f"soak{self.run}"},
            "job": {
                "name": "${stage}_${vars.i}",
                "restart": {"on": ["FAILED"], "max_attempts": 3},
                # Released by the soak a few at a time, so that rounds keep submitting.
                "start_conditions": [
                    {"class_name": "FileExistsCondition", "path": "${vars.markers}/go/${job.name}"}
                ],
            },
            "vars": {
                "i": 0,
                "rev": 0,
                "flaky": 0,
                "up": "",
                "sleep": 1,
                "markers": str(self.markers),
            },
            "backend": {"bash": {"command": command}},
            "slurm": {"sbatch": {"time": 2}},
            "sweep": {
                "type": "list",
                "groups": [
                    {
                        "type": "product",
                        "groups": [
                            {"type": "list", "configs": configs("stable")},
                            {
                                "type": "list",
                                "configs": [
                                    {"stage": stable},
                                    # Escaped: resolved per job, to its stable sibling.
                                    {"stage": decay, "vars.up": f"\\${{sibling.{stable}.name}}"},
                                ],
                            },
                        ],
                    },
                    {
                        "type": "list",
                        "defaults": {"stage": self.stage("chain"), "job.chain_repeat": 2},
                        "configs": configs("chain"),
                    },
                    {
                        "type": "list",
                        "defaults": {"stage": self.stage("array"), "slurm.array": True},
                        "configs": configs("array"),
                    },
                    {
                        "type": "list",
                        "defaults": {"stage": self.stage("flaky"), "vars.flaky": 1},
                        "configs": configs("flaky"),
                    },
                ],
            },
        }
