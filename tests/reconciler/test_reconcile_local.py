"""The reconciler end to end on the local scheduler (no SLURM needed): the quick start's
`oellm reconcile b/ --wait`, stages, dry runs and status."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from oellm.cli import main
from tests.helpers import EXAMPLES, write


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    return tmp_path


def test_quick_start_demo_runs_to_completion_without_slurm(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No sbatch on PATH: the local scheduler is the default.
    bin_dir = in_tmp / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "date", "mkdir", "hostname", "sleep", "cat"):
        found = shutil.which(tool)
        assert found
        os.symlink(found, bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert run(["compile", str(EXAMPLES / "demo.yaml"), "-o", "b"], capsys)[0] == 0
    code, out, err = run(["reconcile", "b", "--wait", "--interval", "0.5"], capsys)
    assert (code, err) == (0, ""), out
    assert "submitted demo attempt 1 as job 1" in out
    assert "demo attempt 1 COMPLETED (exit 0)" in out
    log = (in_tmp / "output" / "demo" / "current.log").read_text()
    assert "hello from demo" in log and "done" in log
    code, out, _ = run(["status", "b", "--json"], capsys)
    (row,) = json.loads(out)["bundles"][0]["jobs"]
    assert (row["state"], row["attempt"], row["job_id"]) == ("COMPLETED", 1, "1")


def test_stages_dry_run_and_status_locally(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        in_tmp / "exp.yaml",
        """
        project: {name: two}
        job: {name: "two_${stage}"}
        backend:
          bash:
            command: mkdir -p ${job.base_output_dir}/ckpt && touch ${job.base_output_dir}/ckpt/done
        sweep:
          type: list
          groups:
            - configs: [{stage: stable}]
            - configs:
                - stage: decay
                  job.start_conditions:
                    - class_name: FileExistsCondition
                      path: "\\\\${sibling.stable.output_dir}/ckpt/done"
        """,
    )
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, _ = run(["reconcile", "b", "--dry-run", "--scheduler", "local"], capsys)
    assert code == 0
    assert out.splitlines() == [
        "two_stable: would submit attempt 1: first submission",
        "two_decay: no action: waiting for upstream two_stable (not started)",
    ]
    assert not (in_tmp / "output" / ".oellm" / "two" / "jobs").exists()  # a dry run records nothing
    code, out, _ = run(
        ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"], capsys
    )
    assert code == 0, out
    code, out, _ = run(["status", "b", "--scheduler", "local"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == [
        *("JOB", "STAGE", "STATE", "ATTEMPT", "ID", "PROGRESS", "STARTED", "RUN", "REASON"),
        "LOG",
    ]
    # Bash jobs log no training progress.
    assert lines[1].split()[:6] == ["two_stable", "stable", "COMPLETED", "1", "1", "-"]
    assert lines[2].split()[:6] == ["two_decay", "decay", "COMPLETED", "1", "2", "-"]


def test_failed_job_is_reported_and_wait_exits_1(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(in_tmp / "exp.yaml", "project: {name: bad}\nbackend: {bash: {command: 'exit 3'}}\n")
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, _ = run(
        ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"], capsys
    )
    assert code == 1
    assert "bad attempt 1 FAILED (exit 3)" in out
    assert "not completed: bad" in out


def test_wait_with_an_interval_longer_than_the_lease_keeps_the_lock(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between rounds the lease is renewed while it runs: a lock past its lease is never
    renewed (another round may be taking it over), so one long sleep would lose it."""
    monkeypatch.setenv("OELLM_LOCK_LEASE_SECONDS", "1")
    write(in_tmp / "exp.yaml", "project: {name: slow}\nbackend: {bash: {command: 'sleep 2'}}\n")
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, err = run(
        ["reconcile", "b", "--wait", "--interval", "1.5", "--scheduler", "local"], capsys
    )
    assert code == 0, out + err
    assert "slow attempt 1 COMPLETED" in out


@pytest.mark.parametrize("interval", ["nan", "inf", "0"])
def test_wait_refuses_an_interval_that_is_not_a_number_of_seconds(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], interval: str
) -> None:
    """`nan` would renew the lock in a loop without a round; `inf` never run one again."""
    assert run(["compile", str(EXAMPLES / "demo.yaml"), "-o", "b"], capsys)[0] == 0
    code, _, err = run(
        ["reconcile", "b", "--wait", "--interval", interval, "--scheduler", "local"], capsys
    )
    assert code == 2
    assert "Invalid value for '--interval'" in err


def test_wait_that_loses_the_lock_between_rounds_is_busy(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken over while it slept (stopped past its lease, say): as when a round finds it,
    another round holds the state, exit 0; not an error."""
    from oellm import reconcile_cli
    from oellm.reconciler.lock import LockLost

    def taken_over(lock: Any, seconds: float) -> None:
        raise LockLost(lock.path, "another reconcile took it over")

    monkeypatch.setattr(reconcile_cli, "_sleep_holding", taken_over)
    write(in_tmp / "exp.yaml", "project: {name: slow}\nbackend: {bash: {command: 'sleep 2'}}\n")
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, err = run(["reconcile", "b", "--wait", "--scheduler", "local"], capsys)
    assert code == 0, err
    assert "another reconcile took it over" in out


def test_a_renewal_refused_while_settling_stops_the_round_exit_75(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state dir refused the lease's renewal: the round stops and cron tries again
    (exit 75), not "another round holds it" (exit 0)."""
    from oellm.reconciler import reconcile
    from oellm.reconciler.lock import RenewFailed

    def refused(*args: Any, **kwargs: Any) -> None:
        raise RenewFailed(in_tmp, "Read-only file system")

    monkeypatch.setattr(reconcile, "settle", refused)
    assert run(["compile", str(EXAMPLES / "demo.yaml"), "-o", "b"], capsys)[0] == 0
    code, _, err = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 75, err
    assert "could not renew the state lock's lease" in err


def test_bad_bundle_is_exit_2(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "empty").mkdir()
    code, _, err = run(["reconcile", "empty", "--scheduler", "local"], capsys)
    assert code == 2 and "not a bundle" in err and "Traceback" not in err


def test_hand_edited_script_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["compile", str(EXAMPLES / "demo.yaml"), "-o", "b"], capsys)[0] == 0
    script = in_tmp / "b" / "jobs" / "demo.sbatch"
    script.write_text(script.read_text() + "\necho edited\n")
    code, _, err = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 2 and "changed after compile" in err and "b/jobs/demo.sbatch" in err


def test_a_chain_runs_its_links_one_after_the_other_locally(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        in_tmp / "exp.yaml",
        """
        project: {name: ch}
        backend: {bash: {command: 'echo "$SLURM_JOB_ID" >> ${job.base_output_dir}/runs'}}
        job: {chain_repeat: 3}
        """,
    )
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, _ = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 1
    assert out.splitlines() == [
        "submitted ch attempt 1 link 1/3 as job 1 (first submission)",
        "queued ch attempt 1 link 2/3 as job 2 after job 1",
        "queued ch attempt 1 link 3/3 as job 3 after job 2",
    ]
    code, out, _ = run(
        ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"], capsys
    )
    assert code == 0, out
    assert (in_tmp / "output/ch/runs").read_text().split() == ["1", "2", "3"]
    assert os.readlink(in_tmp / "output/ch/current.log") == "slurm-3.log"
    code, out, _ = run(["status", "b", "ch", "--json", "--scheduler", "local"], capsys)
    (attempt,) = json.loads(out)["attempts"]
    assert [(x["job_id"], x["after"], x["state"]) for x in attempt["links"]] == [
        ("1", None, "COMPLETED"),
        ("2", "1", "COMPLETED"),
        ("3", "2", "COMPLETED"),
    ]


@pytest.mark.parametrize("version", [0, 2, "1"])
def test_lockfile_of_another_version_is_a_clear_error(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], version: object
) -> None:
    assert run(["compile", str(EXAMPLES / "demo.yaml"), "-o", "b"], capsys)[0] == 0
    lock_path = in_tmp / "b" / "plan.lock.json"
    lock = json.loads(lock_path.read_text())
    lock["version"] = version
    lock_path.write_text(json.dumps(lock))
    code, _, err = run(["reconcile", "b", "--scheduler", "local"], capsys)
    assert code == 2
    assert f"lockfile version {version!r} is not supported (this oellm reads version 1)" in err
    assert "hint: recompile the bundle" in err and "Traceback" not in err


def test_every_released_lockfile_version_still_loads() -> None:
    """The lockfile is a contract: each released version is kept as a fixture that must load."""
    from oellm.reconciler.bundle import load_bundle

    fixtures = sorted((Path(__file__).parent / "lockfiles").glob("v*"))
    assert fixtures, "no lockfile fixtures"
    for folder in fixtures:
        bundle = load_bundle(folder)
        assert bundle.jobs and bundle.bundle_id


def test_array_members_run_one_by_one_on_the_local_scheduler(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The local scheduler has no arrays: each member runs its own script as a job of its
    own, logs where its task would (`slurm-<id>_<index>.log`) and gets `current_<index>.log`."""
    write(
        in_tmp / "exp.yaml",
        """
        project: {name: arr}
        stage: train
        job: {name: "t_${vars.i}"}
        vars: {i: 0}
        backend: {bash: {command: "echo job t_${vars.i}"}}
        slurm: {array: true}
        sweep:
          params: {vars.i: [0, 1]}
        """,
    )
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, err = run(
        ["reconcile", "b", "--scheduler", "local", "--wait", "--interval", "0.5"], capsys
    )
    assert (code, err) == (0, ""), out
    code, out, _ = run(["status", "b", "--json"], capsys)
    rows = {row["job"]: row for row in json.loads(out)["bundles"][0]["jobs"]}
    for index in (0, 1):
        row = rows[f"t_{index}"]
        assert row["state"] == "COMPLETED" and "_" not in row["job_id"], row
        link = in_tmp / "output" / f"t_{index}" / f"current_{index}.log"
        assert os.readlink(link) == f"../arrays/train/slurm-{row['job_id']}_{index}.log"
        assert link.read_text() == f"job t_{index}\n"
        markers = in_tmp / "output" / f"t_{index}" / ".oellm"
        assert (markers / f"{row['job_id']}.exit").read_text() == "0\n"


def test_wait_counts_a_completed_job_whose_script_changed_since_as_completed(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--wait` reads the decided outcome, not the reason's text: a job that completed and was
    recompiled afterwards says so in its reason, and is still completed."""
    write(in_tmp / "exp.yaml", "project: {name: done}\nbackend: {bash: {command: 'echo one'}}\n")
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    wait = ["reconcile", "b", "--wait", "--interval", "0.3", "--scheduler", "local"]
    code, out, _ = run(wait, capsys)
    assert code == 0, out
    write(in_tmp / "exp.yaml", "project: {name: done}\nbackend: {bash: {command: 'echo two'}}\n")
    assert run(["compile", "exp.yaml", "-o", "b"], capsys)[0] == 0
    code, out, _ = run(["reconcile", "b", "--dry-run", "--scheduler", "local"], capsys)
    assert "done: no action: completed (its script changed since" in out
    code, out, _ = run(wait, capsys)
    assert code == 0, out
    assert "not completed" not in out
