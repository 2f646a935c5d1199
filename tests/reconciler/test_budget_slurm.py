"""The count budget against the real local SLURM: held jobs (`#SBATCH --hold`, they stay
queued) go a few per round, each exactly once, in plan order; a stage-ordered bundle with
`dependency: slurm` keeps its afterok dependencies when a stage is split across rounds; an
array split across rounds goes as one sbatch per round."""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from oellm.reconciler import tags
from tests.reconciler.slurm_helpers import (
    cancel_prefix,
    compile_to,
    oellm,
    queued_names,
    tag_prefix,
)
from tests.reconciler.slurm_helpers import status_rows as status

pytestmark = pytest.mark.slurm


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    """Bundles whose queued jobs are cancelled after the test, however it ended."""
    bundles: list[Path] = []
    yield bundles
    for bundle in bundles:
        cancel_prefix(tag_prefix(bundle))


def reconcile(bundle: Path, *args: str) -> str:
    run = oellm("reconcile", str(bundle), *args)
    assert run.returncode == 1, run.stdout + run.stderr
    return run.stdout


def submitted(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if " attempt " in line]


def dependencies(prefix: str) -> dict[str, str]:
    """Job tag (read from its name) -> its dependency as squeue shows it
    (`afterok:123(unfulfilled)`)."""
    listed = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%j|%E"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    pairs = (line.partition("|") for line in listed.stdout.splitlines())
    by_tag = {tags.tag_of(name): dep for name, _, dep in pairs}
    return {tag: dep for tag, dep in by_tag.items() if tag.startswith(prefix)}


def test_twelve_held_jobs_with_max_submit_five_go_in_three_rounds(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    values = ", ".join(str(i) for i in range(12))
    bundle = compile_to(
        tmp_path,
        f"""
        project: {{name: budget12}}
        job: {{name: "b12_${{vars.i}}"}}
        vars: {{i: 0}}
        backend: {{bash: {{command: "echo hello"}}}}
        slurm: {{sbatch: {{hold: true}}}}
        sweep:
          params: {{vars.i: [{values}]}}
        """,
    )
    cleanup.append(bundle)
    prefix = tag_prefix(bundle)
    names = [f"b12_{i}" for i in range(12)]
    said = [
        "submitted 5 of 12 ready jobs; the rest go in the next round (count budget 5)",
        "submitted 5 of 7 ready jobs; the rest go in the next round (count budget 5)",
        None,
    ]
    for upto, line in zip((5, 10, 12), said, strict=True):
        out = reconcile(bundle, "--max-submit", "5")
        if line is None:
            assert "the rest go in the next round" not in out, out
        else:
            assert line in out.splitlines(), out
        queued = collections.Counter(queued_names(prefix))
        assert len(queued) == upto and set(queued.values()) == {1}, queued  # once each
    rows = status(bundle)
    assert all(rows[name]["attempt"] == 1 for name in names)
    # Plan order (here the sweep's): SLURM numbered them in that order.
    by_id = sorted(names, key=lambda name: int(rows[name]["job_id"]))
    assert by_id == names
    # A fourth round has nothing left to submit.
    quiet = oellm("reconcile", str(bundle), "--max-submit", "5")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert len(queued_names(prefix)) == 12


def test_stages_split_across_rounds_keep_their_afterok_dependencies(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    # The sweep lists `second` before `first` for every value: plan order still puts the
    # whole first stage before the second.
    bundle = compile_to(
        tmp_path,
        """
        project: {name: budgetdep}
        job: {name: "bd_${vars.i}_${stage}", dependency: slurm}
        vars: {i: 0, note: ""}
        backend: {bash: {command: "echo ${vars.note}"}}
        slurm: {sbatch: {hold: true}}
        sweep:
          type: product
          groups:
            - params: {vars.i: [0, 1, 2]}
            - type: list
              configs:
                - {stage: second, vars.note: "\\\\${sibling.first.name}"}
                - {stage: first}
        """,
    )
    cleanup.append(bundle)
    prefix = tag_prefix(bundle)
    out = reconcile(bundle, "--max-submit", "4")
    firsts = [f"bd_{i}_first" for i in range(3)]
    seconds = [f"bd_{i}_second" for i in range(3)]
    went = submitted(out)
    assert went == [*firsts, "bd_0_second"], out
    assert "submitted 4 of 6 ready jobs" in out
    out = reconcile(bundle, "--max-submit", "4")
    went = submitted(out)
    assert went == seconds[1:], out
    rows = status(bundle)
    deps = dependencies(prefix)
    assert len(deps) == 6
    for i in range(3):
        first_id = rows[f"bd_{i}_first"]["job_id"]
        second = f"{prefix}bd_{i}_second.1"
        # Queued in round 1 behind a job of the same round, or in round 2 behind a queued one.
        assert deps[second].startswith(f"afterok:{first_id}"), deps
    assert collections.Counter(queued_names(prefix)).most_common(1)[0][1] == 1


def test_an_array_split_across_rounds_goes_as_one_sbatch_per_round(
    tmp_path: Path, cleanup: list[Path]
) -> None:
    bundle = compile_to(
        tmp_path,
        """
        project: {name: budgetarr}
        stage: train
        job: {name: "ba_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "echo hello"}}
        slurm: {array: true, sbatch: {hold: true, time: 1}}
        sweep:
          params: {vars.i: [0, 1, 2, 3, 4, 5]}
        """,
    )
    cleanup.append(bundle)
    out = reconcile(bundle, "--max-submit", "4")
    assert "submitted 4 of 6 ready jobs" in out, out
    rows = status(bundle)
    ids = {name: rows[name]["job_id"] for name in (f"ba_{i}" for i in range(6))}
    first = {job_id.split("_")[0] for job_id in ids.values() if job_id}
    assert len(first) == 1 and [n for n, i in ids.items() if i] == [f"ba_{i}" for i in range(4)]
    reconcile(bundle, "--max-submit", "4")
    rows = status(bundle)
    ids = {name: rows[name]["job_id"] for name in ids}
    arrays = collections.Counter(job_id.split("_")[0] for job_id in ids.values())
    assert sorted(arrays.values()) == [2, 4], ids  # two arrays: four tasks, then two
