"""Whose state dir is it, and where did it go: identity, --move-state / --fresh-state,
--claim-state, recovery of lost records and logging, on the local scheduler (no SLURM).
The same paths on the real SLURM are in test_never_twice_slurm.py."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from oellm.cli import main
from tests.helpers import write

EXP = """
project: {name: ident}
job: {name: "id_${vars.i}"}
vars: {i: 0}
backend: {bash: {command: "sleep 30"}}
sweep: {params: {vars.i: [1, 2]}}
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def exp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "outA"))
    return write(tmp_path / "exp.yaml", EXP)


def _cancel_all(bundle: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(["cancel", bundle, "--scheduler", "local"], capsys)


def test_a_moved_state_dir_is_refused_then_moved_or_started_afresh(
    exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["compile", str(exp), "-o", "b"], capsys)[0] == 0
    code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 1 and out.count("submitted") == 2
    old_state = tmp_path / "outA" / ".oellm" / "ident"
    ids = {row["job"]: row["job_id"] for row in _status("b", capsys)}
    try:
        monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "outB"))
        code, _, err = run(["compile", str(exp), "-o", "b"], capsys)
        new_state = tmp_path / "outB" / ".oellm" / "ident"
        assert code == 2, err
        assert str(old_state) in err and str(new_state) in err
        assert "--move-state" in err and "--fresh-state" in err
        code, out, err = run(["compile", str(exp), "-o", "b", "--move-state"], capsys)
        assert code == 0, err
        assert f"moved the state from {old_state} to {new_state}" in out
        assert not old_state.exists() and (new_state / "identity.json").is_file()
        code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
        assert "submitted" not in out, out
        assert {row["job"]: row["job_id"] for row in _status("b", capsys)} == ids
        # The key moved with the state and is kept in the lockfile: the moved state dir lost
        # whole is still rebuilt from the tags, not submitted again.
        key = json.loads((new_state / "identity.json").read_text())["key"]
        assert json.loads((tmp_path / "b" / "plan.lock.json").read_text())["project"]["key"] == key
        assert run(["compile", str(exp), "-o", "b", "--check"], capsys)[0] == 0
        for path in new_state.iterdir():
            if path.name != "local":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
        assert out.count("recovered") == 2 and "submitted" not in out, out
    finally:
        _cancel_all("b", capsys)


def test_fresh_state_starts_over_under_another_key(
    exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["compile", str(exp), "-o", "b"], capsys)[0] == 0
    assert run(["reconcile", "b", "--scheduler", "local"], capsys)[0] == 1
    old_key = json.loads((tmp_path / "outA/.oellm/ident/identity.json").read_text())["key"]
    _cancel_all("b", capsys)
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "outB"))
    code, out, err = run(["compile", str(exp), "-o", "b", "--fresh-state"], capsys)
    assert code == 0 and "fresh state in" in out, err
    code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
    try:
        assert out.count("submitted") == 2
        new_key = json.loads((tmp_path / "outB/.oellm/ident/identity.json").read_text())["key"]
        assert new_key != old_key
    finally:
        _cancel_all("b", capsys)


def test_a_second_bundle_on_the_same_state_dir_is_refused(
    exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write(tmp_path / "other.yaml", EXP.replace('"id_${vars.i}"', '"other_${vars.i}"'))
    assert run(["compile", str(exp), "-o", "b1"], capsys)[0] == 0
    assert run(["compile", str(other), "-o", "b2"], capsys)[0] == 0
    try:
        assert run(["reconcile", "b1", "--scheduler", "local"], capsys)[0] == 1
        code, out, err = run(["reconcile", "b2", "--scheduler", "local"], capsys)
        assert code == 2 and "submitted" not in out
        assert str((tmp_path / "b1").resolve()) in err and "project.state_dir" in err
        assert "--claim-state" in err
    finally:
        _cancel_all("b1", capsys)


def test_lost_records_are_recovered_not_resubmitted(
    exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["compile", str(exp), "-o", "b"], capsys)[0] == 0
    try:
        assert run(["reconcile", "b", "--scheduler", "local"], capsys)[0] == 1
        ids = {row["job"]: row["job_id"] for row in _status("b", capsys)}
        state = tmp_path / "outA" / ".oellm" / "ident"
        (state / "jobs" / "id_1" / "attempt-0001.json").unlink()
        code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
        assert code == 1 and "recovered id_1 attempt 1" in out and "submitted" not in out
        assert {row["job"]: row["job_id"] for row in _status("b", capsys)} == ids
        # The whole state dir lost (but the scheduler's own files): rebuilt from the tags.
        for path in state.iterdir():
            if path.name != "local":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
        assert out.count("recovered") == 2 and "submitted" not in out, out
        assert {row["job"]: row["job_id"] for row in _status("b", capsys)} == ids
    finally:
        _cancel_all("b", capsys)


def test_verbose_logs_decisions_and_records(exp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["compile", str(exp), "-o", "b"], capsys)[0] == 0
    try:
        _, out, text = run(["--debug", "reconcile", "b", "--scheduler", "local"], capsys)
        assert "submitted id_1" in out and "DEBUG" not in out, "logs go to stderr"
        assert "id_1: submit: first submission" in text
        assert "attempt-0001.json" in text and "wrote" in text
        assert "started as pid" in text
        _, _, quiet = run(["reconcile", "b", "--scheduler", "local"], capsys)
        assert "INFO" not in quiet and "DEBUG" not in quiet
    finally:
        logging.getLogger().setLevel(logging.WARNING)
        _cancel_all("b", capsys)


def _status(bundle: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code, out, err = run(["status", bundle, "--json", "--scheduler", "local"], capsys)
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)["bundles"][0]["jobs"]
    return rows


def test_two_checkouts_of_one_experiment_never_share_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default state dir is relative (`./output/.oellm/<project>`): the key comes from
    where it really is, so a second checkout in another folder never adopts the first's jobs
    by tag (SLURM keeps them for weeks)."""
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    keys = []
    for name in ("one", "two"):
        folder = tmp_path / name
        write(folder / "exp.yaml", EXP)
        monkeypatch.chdir(folder)
        assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
        try:
            code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
            assert code == 1 and out.count("submitted") == 2, out
            identity = folder / "output" / ".oellm" / "ident" / "identity.json"
            keys.append(json.loads(identity.read_text())["key"])
            # The identity file lost: the key comes back from the records' tags.
            identity.unlink()
            code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
            assert "submitted" not in out and "recovered" not in out, out
            assert json.loads(identity.read_text())["key"] == keys[-1]
        finally:
            _cancel_all("b", capsys)
    assert keys[0] != keys[1]


def test_the_identity_records_the_layout_and_a_newer_one_is_refused(
    exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["compile", str(exp), "-o", "b"], capsys)[0] == 0
    identity = tmp_path / "outA" / ".oellm" / "ident" / "identity.json"
    identity.parent.mkdir(parents=True)
    # Written by an oellm before layouts: read as layout 1, and upgraded by the next round.
    old = {"project": "ident", "key": "0123abcd", "bundle": str((tmp_path / "b").resolve())}
    identity.write_text(json.dumps(old))
    code, out, err = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 1, out + err
    assert json.loads(identity.read_text()) == {**old, "layout": 2}
    _cancel_all("b", capsys)
    # Laid out by a newer oellm: refused, naming the file, nothing done.
    identity.write_text(json.dumps({**old, "layout": 3}))
    code, out, err = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 2, out + err
    assert "newer oellm (layout 3" in err and str(identity) in err
