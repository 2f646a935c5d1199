"""`oellm reconcile --sync-wandb`: the offline W&B runs of a Megatron job (written by a fake
Megatron under `<save>/wandb/wandb/offline-run-*-<run id>`) are uploaded by the `wandb`
command, faked at the process boundary, once per change; a failing or missing `wandb` is a
warning, never the round's exit status."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from oellm.cli import main
from tests.helpers import write

FAKE_MEGATRON = Path(__file__).parent / "fake_megatron"
EXP = """
defaults:
  - /backend: megatron
project: {name: wb}
backend:
  megatron: {seq_length: 64, global_batch_size: 8, train_iters: 5, wandb_project: gpt}
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def fake_wandb(folder: Path, exit_code: int = 0) -> Path:
    """A `wandb` that logs each call's arguments and exits with `exit_code`."""
    folder.mkdir(parents=True, exist_ok=True)
    calls = folder / "calls.log"
    script = folder / "wandb"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> "{calls}"\n'
        + ('echo "wandb: ERROR api key not configured" >&2\n' if exit_code else "")
        + f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return calls


@pytest.fixture
def ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    """The job compiled and run to completion locally, without syncing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEGATRON_LM_DIR", str(FAKE_MEGATRON))
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    write(tmp_path / "exp.yaml", EXP)
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, err = run(
        ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"], capsys
    )
    assert code == 0, out + err
    return tmp_path


def offline_run(folder: Path) -> Path:
    lock = json.loads((folder / "b" / "plan.lock.json").read_text())
    (job,) = lock["jobs"]
    assert job["wandb"]["dir"] == "./output/wb/checkpoints/wandb"
    (found,) = (folder / "output/wb/checkpoints/wandb/wandb").glob(
        f"offline-run-*-{job['wandb']['run_id']}"
    )
    return found


def test_runs_with_new_data_are_synced_once(
    ran: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_wandb(ran / "fakebin")
    monkeypatch.setenv("PATH", f"{ran / 'fakebin'}{os.pathsep}{os.environ['PATH']}")
    folder = offline_run(ran)
    code, out, err = run(["reconcile", "b", "--sync-wandb", "--scheduler", "local"], capsys)
    assert (code, err) == (0, "")
    assert out == f"synced W&B run {folder}\n"
    assert calls.read_text().splitlines() == [f"sync {folder}"]
    # Nothing new: no call.
    run(["reconcile", "b", "--sync-wandb", "--scheduler", "local"], capsys)
    assert calls.read_text().count("sync ") == 1
    # The run grew (a later attempt, say): synced again.
    with open(folder / "run.wandb", "a") as handle:
        handle.write("more\n")
    code, out, _ = run(["reconcile", "b", "--sync-wandb", "--scheduler", "local"], capsys)
    assert code == 0 and calls.read_text().count("sync ") == 2
    # Without the flag nothing is synced.
    with open(folder / "run.wandb", "a") as handle:
        handle.write("even more\n")
    run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert calls.read_text().count("sync ") == 2


def test_a_failing_wandb_is_a_warning_and_is_tried_again(
    ran: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_wandb(ran / "fakebin", exit_code=1)
    monkeypatch.setenv("PATH", f"{ran / 'fakebin'}{os.pathsep}{os.environ['PATH']}")
    code, out, err = run(["reconcile", "b", "--sync-wandb", "--scheduler", "local"], capsys)
    assert code == 0 and "synced" not in out
    assert "warning: wb: wandb sync" in err and "exited 1: wandb: ERROR api key" in err
    run(["reconcile", "b", "--sync-wandb", "--scheduler", "local"], capsys)
    assert calls.read_text().count("sync ") == 2  # not recorded as synced: tried again


def test_without_the_wandb_command_nothing_happens(
    ran: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = ran / "bare"
    bare.mkdir()
    for tool in ("bash", "sh"):
        os.symlink(f"/bin/{tool}", bare / tool)
    monkeypatch.setenv("PATH", str(bare))
    code, out, err = run(["reconcile", "b", "--sync-wandb", "--scheduler", "local"], capsys)
    assert (code, out, err) == (0, "", "")
    assert not (ran / "output" / "wb" / ".oellm-state" / "wandb-sync.json").exists()
