"""The parts of a script plan remembered for the jobs that share a config part (the `#SBATCH`
lines of `slurm.sbatch`, its check, the launch line's first words) are those each job alone
gives."""

from __future__ import annotations

from typing import Any

import pytest

from oellm.compiler import checks, script
from oellm.compiler.script import sbatch_options, scalar

SBATCH: list[dict[str, Any]] = [
    {"partition": "main", "time": "1:00:00", "nodes": 2},
    {"partition": "main", "requeue": True},
    {"no_requeue": False, "exclusive": True, "mem": None},
    {"job_name": "other", "partition": "p"},  # takes the job name's place
    {"output": "/o/%j.log"},
    {"ntasks_per_node": 4, "ntasks-per-node": 8},  # one option, written twice
    {"comment": "has space", "x": "", "y": 1.5},
    {"comment": 'a "quoted" one'},  # unsafe
    {},
]


def _config(sbatch: dict[str, Any], name: str = "job", log: str = "/l/job.log") -> Any:
    return {"job": {"name": name, "log_path": log}, "slurm": {"sbatch": sbatch}}


def _alone(config: Any) -> list[Any]:
    """The directives as every option alone gives them."""
    out = []
    for option, value, _ in sbatch_options(config):
        if value is None or value is False:
            continue
        if value is True:
            out.append((f"--{option}", None))
            continue
        text = scalar(value)
        if script._DIRECTIVE_NEEDS_QUOTES.search(text) or text == "":
            text = f'"{text}"'
        out.append((f"--{option}", text))
    return out


@pytest.mark.parametrize("sbatch", SBATCH, ids=repr)
def test_directives_of_a_shared_sbatch_are_each_jobs_own(sbatch: dict[str, Any]) -> None:
    for name in ("a", "b c", 'q"'):
        config = _config(sbatch, name=name, log=f"/l/{name}.log")
        assert script._directives(config) == _alone(config)
        assert script._directives(_config(dict(sbatch), name=name)) == _alone(
            _config(sbatch, name=name)
        )


@pytest.mark.parametrize("sbatch", SBATCH, ids=repr)
def test_the_directive_check_of_a_shared_sbatch_finds_what_it_finds_alone(
    sbatch: dict[str, Any],
) -> None:
    for name, log in (("a", "/l/a.log"), ('b"', "/l/b.log"), ("c", "/l/\nc.log")):
        config = _config(sbatch, name=name, log=log)
        found = [p.message for p in checks.directive_values(config, {})]
        alone = [
            text
            for _, value, _ in sbatch_options(config)
            if value is not None and not isinstance(value, bool)
            for text in [scalar(value)]
            if script.DIRECTIVE_UNSAFE.search(text)
        ]
        assert found == [f"value {text!r} cannot be written on an #SBATCH line" for text in alone]
