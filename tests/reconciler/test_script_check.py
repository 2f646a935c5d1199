"""Scripts are checked against the lockfile when they are about to be submitted, not every
round: an edited script is refused as before (unless --allow-edited), one that no round will
submit again costs nothing, and a bundle recompiled during the round is read again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oellm.reconciler import bundle as bundle_module
from oellm.reconciler.reconcile import reconcile_once
from oellm.reconciler.session import Session
from tests.helpers import write
from tests.reconciler.test_reconcile_local import in_tmp, run

__all__ = ["in_tmp"]

ONE = 'project: {name: sc}\nbackend: {bash: {command: "echo one"}}\n'
TWO = 'project: {name: sc}\nbackend: {bash: {command: "echo two"}}\n'


def compiled(folder: Path, text: str, out: str, capsys: pytest.CaptureFixture[str]) -> Path:
    write(folder / f"{out}.yaml", text)
    assert run(["compile", f"{out}.yaml", "-o", out], capsys)[0] == 0
    return folder / out


def edit(bundle: Path) -> None:
    script = bundle / "jobs" / "sc.sbatch"
    script.write_text(script.read_text() + "\necho edited\n")


def test_an_edited_script_is_refused_when_it_would_be_submitted_and_in_the_dry_run(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled(in_tmp, ONE, "b", capsys)
    edit(in_tmp / "b")
    for extra in (["--dry-run"], []):
        code, _, err = run(["reconcile", "b", "--scheduler", "local", *extra], capsys)
        assert code == 2 and "b/jobs/sc.sbatch: the script was changed after compile" in err
        assert "--allow-edited" in err
    code, out, _ = run(["reconcile", "b", "--scheduler", "local", "--allow-edited"], capsys)
    assert code == 1 and "submitted sc attempt 1" in out


def test_an_edited_script_no_round_submits_again_does_not_stop_the_rounds(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled(in_tmp, ONE, "b", capsys)
    code, out, _ = run(
        ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"], capsys
    )
    assert code == 0, out
    edit(in_tmp / "b")
    assert run(["reconcile", "b", "--scheduler", "local"], capsys)[:2] == (0, "")
    code, _, err = run(["cancel", "b", "--scheduler", "local"], capsys)
    assert code in (0, 1) and err == ""


def test_a_bundle_recompiled_during_the_round_is_read_again_not_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = compiled(in_tmp, ONE, "b", capsys)
    second = compiled(in_tmp, TWO, "next", capsys)
    session = Session(first, "local")
    assert session.bundle.jobs[0].sha256 != bundle_module.load_bundle(second).jobs[0].sha256
    real = bundle_module._check_script
    swapped: list[bool] = []

    def swap_then_check(script: Path, sha256: str) -> None:
        if not swapped:
            # The recompiled bundle lands after the round read the lockfile, before it
            # checks the script it is about to submit.
            for name in ("plan.lock.json", "jobs/sc.sbatch"):
                (first / name).write_bytes((second / name).read_bytes())
            swapped.append(True)
        real(script, sha256)

    monkeypatch.setattr(bundle_module, "_check_script", swap_then_check)
    said: list[str] = []
    report = reconcile_once(session, dry_run=False, say=said.append)
    assert report.exit_code == 1 and swapped, said
    state = session.bundle.state_path / "jobs" / "sc" / "attempt-0001.json"
    record = json.loads(state.read_text())
    assert record["script_sha256"] == bundle_module.load_bundle(second).jobs[0].sha256
    assert record["bundle_id"] == bundle_module.load_bundle(second).bundle_id
