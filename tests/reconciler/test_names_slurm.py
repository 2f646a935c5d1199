"""Job names on the real SLURM: squeue shows a job's own name first, and jobs the previous oellm
named by the bare tag (`oellm.<key>.<job>.<attempt>`), still queued at the upgrade or only in
sacct by then, are adopted or recovered and never submitted again (tags.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from oellm.reconciler import tags
from oellm.reconciler.bundle import load_bundle
from oellm.reconciler.identity import read_identity
from tests.helpers import wait_for
from tests.reconciler.slurm_helpers import (
    cancel_prefix,
    compile_to,
    ledger,
    oellm,
    queued_names,
    status_rows,
    tag_prefix,
)

pytestmark = pytest.mark.slurm

BUNDLE = """
project: {{name: {project}}}
job: {{name: "{job}_${{vars.i}}"}}
vars: {{i: 0}}
backend: {{bash: {{command: "true"}}}}
slurm: {{sbatch: {{{sbatch}}}}}
sweep:
  params: {{vars.i: [{values}]}}
"""


@pytest.fixture(autouse=True)
def _cluster(slurm_cluster: object) -> None:
    return None


def compiled(tmp_path: Path, project: str, job: str, values: str, held: bool = True) -> Path:
    sbatch = "hold: true" if held else "time: 1"
    return compile_to(
        tmp_path, BUNDLE.format(project=project, job=job, values=values, sbatch=sbatch)
    )


def submit_as_before(bundle: Path, job: str) -> tuple[str, str]:
    """Submit `job`'s attempt 1 as the previous oellm did: its script, from the bundle's root,
    named by the bare tag (job name and comment). Returns (job id, tag)."""
    loaded = load_bundle(bundle)
    tag = f"{tag_prefix(bundle)}{job}.1"
    done = subprocess.run(
        ["sbatch", "--parsable", f"--job-name={tag}", f"--comment={tag}"]
        + [str(loaded.script_path(loaded.job(job)).resolve())],
        cwd=loaded.root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().split(";")[0], tag


def reconcile(bundle: Path, *, env: dict[str, str] | None = None) -> str:
    run = oellm("reconcile", str(bundle), env=env)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    return run.stdout


def submitted(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("submitted ")]


def names_in_squeue(argv: list[str]) -> list[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return [line.strip() for line in done.stdout.splitlines()]


def test_squeue_shows_the_jobs_own_name_first(tmp_path: Path) -> None:
    bundle = compiled(tmp_path, "nm_show", "show", "0, 1")
    prefix = tag_prefix(bundle)
    key = prefix.split(".")[1]
    try:
        out = reconcile(bundle)
        assert sorted(submitted(out)) == ["show_0", "show_1"], out
        ids = {job: status_rows(bundle)[job]["job_id"] for job in ("show_0", "show_1")}
        listed = names_in_squeue(["squeue", "--me", "-h", "-o", "%i|%j"])
        names = dict(line.split("|", 1) for line in listed)
        assert names[ids["show_0"]] == f"show_0.1@oellm.{key}"
        assert names[ids["show_1"]] == f"show_1.1@oellm.{key}"
        # squeue's own default columns: the name is cut to 8 characters, the job's name first.
        default = names_in_squeue(["squeue", "--me", "-h", "-j", ids["show_0"]])
        assert default[0].split()[2] == "show_0.1", default
        # A round reads the names back as the tags: nothing is submitted again.
        assert submitted(reconcile(bundle)) == []
        assert sorted(queued_names(prefix)) == [f"{prefix}show_0.1", f"{prefix}show_1.1"]
    finally:
        cancel_prefix(prefix)


@pytest.mark.parametrize("intent", [True, False], ids=["with-intent-record", "without-record"])
def test_a_job_queued_under_the_old_name_is_adopted_not_submitted_again(
    tmp_path: Path, intent: bool
) -> None:
    project = "nm_old_intent" if intent else "nm_old_bare"
    bundle = compiled(tmp_path, project, "old", "0")
    prefix = tag_prefix(bundle)
    try:
        if intent:
            # The previous oellm wrote its intent (the same record, the same tag) and was
            # stopped before sbatch answered; sbatch had queued the job anyway.
            crashed = oellm("reconcile", str(bundle), env={"OELLM_CRASH_AT": "after-intent"})
            assert crashed.returncode == -9, crashed.stdout + crashed.stderr
            assert [a["phase"] for a in ledger(bundle, "old_0")] == ["intent"]
        job_id, tag = submit_as_before(bundle, "old_0")

        out = reconcile(bundle)
        assert submitted(out) == [], out
        word = "adopted" if intent else "recovered"
        assert any(word in line and "old_0" in line for line in out.splitlines()), out
        assert f"found {tag} as job {job_id}" in out, out
        (attempt,) = ledger(bundle, "old_0")
        assert (attempt["job_id"], attempt["tag"]) == (job_id, tag)
        identity = read_identity(load_bundle(bundle).state_path)
        assert identity is not None and tags.prefix(identity.key) == prefix
        # The next round sees it as it is: still one SLURM job, under its old name.
        assert submitted(reconcile(bundle)) == []
        assert queued_names(prefix) == [tag]
    finally:
        cancel_prefix(prefix)


def test_finished_jobs_of_both_names_are_recovered_from_sacct(tmp_path: Path) -> None:
    """Once squeue has forgotten them (MinJobAge), sacct alone knows the jobs: one the previous
    oellm submitted, one this oellm did. With the whole state dir lost, a round recovers both
    from sacct by their names and submits nothing."""
    bundle = compiled(tmp_path, "nm_acct", "fin", "0, 1", held=False)
    prefix = tag_prefix(bundle)
    try:
        old_id, old_tag = submit_as_before(bundle, "fin_0")
        out = reconcile(bundle)
        assert submitted(out) == ["fin_1"], out
        new_id = status_rows(bundle)["fin_1"]["job_id"]
        ids = {old_id, new_id}

        def forgotten() -> bool:
            listed = names_in_squeue(["squeue", "--me", "-h", "-t", "all", "-o", "%i"])
            return not ids & set(listed)

        wait_for("squeue to forget both jobs", forgotten, seconds=180, every=2)
        shutil.rmtree(load_bundle(bundle).state_path)

        out = reconcile(bundle)
        assert submitted(out) == [], out
        assert f"found {old_tag} as job {old_id}" in out, out
        assert f"found {prefix}fin_1.1 as job {new_id}" in out, out
        rows = status_rows(bundle)
        assert {job: rows[job]["job_id"] for job in ("fin_0", "fin_1")} == {
            "fin_0": old_id,
            "fin_1": new_id,
        }
    finally:
        cancel_prefix(prefix)
