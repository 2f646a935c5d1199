"""A round reads the lockfile it read strictly before without its schema check (the digest of
its bytes is kept in the state dir); bytes edited since are checked again, and a digest file
lost, damaged or unwritable costs only that check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oellm.lockfile import codec
from oellm.reconciler.bundle import LAST_READ_NAME, load_bundle
from tests.helpers import write
from tests.reconciler.test_reconcile_local import in_tmp, run

__all__ = ["in_tmp"]

EXP = (
    "project: {name: rr}\n"
    "job: {name: 'rr_${vars.i}'}\n"
    "vars: {i: 0}\n"
    'backend: {bash: {command: "echo ${vars.i}"}}\n'
    "sweep:\n  params: {vars.i: [1, 2, 3]}\n"
)


def compiled(folder: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    write(folder / "rr.yaml", EXP)
    assert run(["compile", "rr.yaml", "-o", "b"], capsys)[0] == 0
    return folder / "b"


def digest_file(bundle: Path) -> Path:
    return load_bundle(bundle, check_scripts=False).state_path / LAST_READ_NAME


def no_strict_read(data: bytes | str, where: str) -> codec.Lock:
    raise AssertionError("read strictly again")


def test_rounds_after_the_first_read_the_lockfile_without_its_schema_check(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = compiled(in_tmp, capsys)
    state = load_bundle(bundle, check_scripts=False).state_path
    assert not state.exists()  # loading alone made no state dir
    assert run(["reconcile", "b", "--scheduler", "local"], capsys)[0] in (0, 1)
    assert not (state / LAST_READ_NAME).exists()  # the state dir came after the read
    assert run(["reconcile", "b", "--scheduler", "local"], capsys)[0] in (0, 1)
    assert len((state / LAST_READ_NAME).read_text().strip()) == 64
    monkeypatch.setattr(codec, "_strict", no_strict_read)
    code, out, err = run(
        ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"], capsys
    )
    assert code == 0 and err == "", err
    code, out, _ = run(["status", "b"], capsys)
    assert code == 0 and out.count("COMPLETED") >= 3


def test_a_lockfile_edited_after_a_round_is_checked_again_and_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = compiled(in_tmp, capsys)
    for _ in range(2):
        assert run(["reconcile", "b", "--scheduler", "local"], capsys)[0] in (0, 1)
    assert digest_file(bundle).is_file()
    lock = bundle / "plan.lock.json"
    document = json.loads(lock.read_bytes())
    document["jobs"][0]["max_minutes"] = 5  # no such field: the compiled reader would skip it
    lock.write_text(json.dumps(document, indent=2))
    code, _, err = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 2
    assert "b/plan.lock.json: the lockfile breaks its schema at jobs/0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["garbage", "binary", "folder", "empty"])
def test_a_damaged_digest_file_is_a_strict_read_that_writes_it_again(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    bundle = compiled(in_tmp, capsys)
    for _ in range(2):
        assert run(["reconcile", "b", "--scheduler", "local"], capsys)[0] in (0, 1)
    kept = digest_file(bundle)
    good = kept.read_text()
    kept.unlink()
    if damage == "garbage":
        kept.write_text("0" * 64 + "\n")
    elif damage == "binary":
        kept.write_bytes(b"\xff\xfe\x00")
    elif damage == "folder":
        kept.mkdir()
    else:
        kept.write_text("")
    code, _, err = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code in (0, 1) and err == ""
    if damage == "folder":
        assert kept.is_dir()  # not ours to remove; every round reads strictly
    else:
        assert kept.read_text() == good


def test_a_read_only_command_makes_no_state_dir(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = compiled(in_tmp, capsys)
    state = load_bundle(bundle, check_scripts=False).state_path
    for command in (["status", "b"], ["reconcile", "b", "--dry-run", "--scheduler", "local"]):
        assert run(command, capsys)[0] in (0, 1)
    assert not state.exists()
