"""The local scheduler with real processes: small scripts run detached, end in the states SLURM
would give them, log where `#SBATCH --output` says, and the compiled demo bundle runs end to end.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from oellm.compiler.pipeline import CompileRequest, compile_bundle
from oellm.compiler.write import write_bundle
from oellm.reconciler.errors import SchedulerError
from oellm.reconciler.schedulers import FINISHED, Scheduler, SchedulerJob, Submission
from oellm.reconciler.schedulers.local import (
    LocalScheduler,
    parse_time_limit,
    pick_options,
    read_directives,
    substitute,
)
from oellm.reconciler.schedulers.local_wrapper import LAUNCH_FAILURE_SIGNAL, SRUN_STUB
from tests.compiler.hostile import HOSTILE
from tests.helpers import EXAMPLES, wait_for

DEADLINE_S = 20.0


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalScheduler]:
    """A scheduler with a short KillWait; at teardown nothing it started is left running."""
    scheduler = LocalScheduler(tmp_path / "state", kill_wait_s=1.0)
    yield scheduler
    live = [row.job_id for row in scheduler.query("", None) if row.state not in FINISHED]
    scheduler.cancel(live)
    for job_id in live:
        wait_until_finished(scheduler, job_id)


def job(workdir: Path, body: str, directives: str = "") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "job.sbatch"
    script.write_text(f"#!/bin/bash\n{directives}\n{body}\n", encoding="utf-8")
    return script


def poll(what: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    wait_for("the local job", what, timeout, every=0.05)


def row_of(scheduler: Scheduler, job_id: str) -> SchedulerJob:
    rows = [row for row in scheduler.query("", None, known_ids=[job_id]) if row.job_id == job_id]
    assert len(rows) == 1
    return rows[0]


def wait_until_finished(
    scheduler: Scheduler, job_id: str, timeout: float = DEADLINE_S
) -> SchedulerJob:
    poll(lambda: row_of(scheduler, job_id).state in FINISHED, timeout)
    return row_of(scheduler, job_id)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Not `killpg(pgid, 0)`: a killed job process
    is orphaned, and stays a zombie (which `kill` still reaches) until init reaps it."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


def test_completed_job_logs_to_the_substituted_output_path(
    local: LocalScheduler, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    script = job(
        work,
        'echo "out $SLURM_JOB_ID $SLURM_JOBID $SLURM_JOB_NAME $SLURM_NTASKS $SLURM_PROCID"\n'
        'echo "cpus=$SLURM_CPUS_PER_TASK dir=$(pwd) submit=$SLURM_SUBMIT_DIR"\n'
        "echo to-stderr >&2",
        "#SBATCH --job-name=ignored\n#SBATCH --output=logs/%x-%j.%%.log\n#SBATCH -c 3",
    )
    job_id = local.submit(Submission(script, "oellm.0a1b2c3d.ok.1", work))

    row = wait_until_finished(local, job_id)

    assert (row.state, row.exit_code, row.signal, row.source) == ("COMPLETED", 0, 0, "local")
    # The job is named as sbatch names it (job first: %x, SLURM_JOB_NAME); its row, by its tag.
    assert row.name == "oellm.0a1b2c3d.ok.1" and row.start and row.end
    log = work / "logs" / f"ok.1@oellm.0a1b2c3d-{job_id}.%.log"
    assert log.read_text().splitlines() == [
        f"out {job_id} {job_id} ok.1@oellm.0a1b2c3d 1 0",
        f"cpus=3 dir={work} submit={work}",
        "to-stderr",
    ]


def test_ids_count_up_and_query_selects_by_prefix_or_id(
    local: LocalScheduler, tmp_path: Path
) -> None:
    script = job(tmp_path / "work", "true")
    ids = [local.submit(Submission(script, tag, script.parent)) for tag in ("a.1", "a.2", "b.1")]
    assert ids == ["1", "2", "3"]
    for job_id in ids:
        wait_until_finished(local, job_id)

    assert [row.job_id for row in local.query("a.", None)] == ["1", "2"]
    assert [row.job_id for row in local.query("a.", None, known_ids=["3"])] == ids
    assert local.query("zzz", None) == []
    assert LocalScheduler(tmp_path / "elsewhere").query("", None) == []
    assert (script.parent / "slurm-1.out").exists()  # sbatch's default output name


def test_concurrent_submitters_get_distinct_ids(local: LocalScheduler, tmp_path: Path) -> None:
    script = job(tmp_path / "work", "true")
    others = [LocalScheduler(tmp_path / "state", kill_wait_s=1.0) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(
            pool.map(lambda s: s.submit(Submission(script, "t.many", script.parent)), others)
        )
    assert sorted(ids, key=int) == [str(n) for n in range(1, 9)]
    for job_id in ids:
        assert wait_until_finished(local, job_id).state == "COMPLETED"


def test_non_zero_exit_is_failed_with_its_code(local: LocalScheduler, tmp_path: Path) -> None:
    script = job(tmp_path / "work", "exit 3")
    row = wait_until_finished(local, local.submit(Submission(script, "t.fail", script.parent)))
    assert (row.state, row.exit_code, row.signal, row.reason) == ("FAILED", 3, 0, "NonZeroExitCode")


def test_time_limit_ends_the_job_as_timeout(local: LocalScheduler, tmp_path: Path) -> None:
    pid_file = tmp_path / "pgid"
    script = job(tmp_path / "work", f"echo $$ > {pid_file}\nsleep 30", "#SBATCH --time=00:00:02")
    began = time.monotonic()
    job_id = local.submit(Submission(script, "t.timeout", script.parent))

    row = wait_until_finished(local, job_id, timeout=10)

    assert time.monotonic() - began < 6
    assert (row.state, row.reason, row.signal) == ("TIMEOUT", "TimeLimit", signal.SIGTERM)
    poll(lambda: not group_alive(int(pid_file.read_text())), timeout=2)


def test_a_job_that_ignores_sigterm_is_killed_after_kill_wait(
    local: LocalScheduler, tmp_path: Path
) -> None:
    # The command line's --time wins over the script's, as with sbatch.
    script = job(tmp_path / "work", "trap '' TERM\nsleep 30", "#SBATCH --time=10")
    submission = Submission(script, "t.stubborn", script.parent, extra_args=("-t", "0:1"))
    row = wait_until_finished(local, local.submit(submission), timeout=10)
    assert (row.state, row.signal) == ("TIMEOUT", signal.SIGKILL)


def test_cancel_ends_a_running_job_and_its_process_group(
    local: LocalScheduler, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pgid"
    script = job(tmp_path / "work", f"echo $$ > {pid_file}\nsleep 30 & sleep 30 & wait")
    job_id = local.submit(Submission(script, "t.cancel", script.parent))
    poll(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    assert row_of(local, job_id).state == "RUNNING"
    pgid = int(pid_file.read_text())
    assert group_alive(pgid)

    local.cancel([job_id, "999", "../1", job_id])  # unknown and odd ids are no error

    row = wait_until_finished(local, job_id, timeout=5)
    assert (row.state, row.signal) == ("CANCELLED", signal.SIGTERM)
    poll(lambda: not group_alive(pgid), timeout=2)
    local.cancel([job_id])  # a finished job: no error, no change
    assert row_of(local, job_id).state == "CANCELLED"


def test_a_wrapper_killed_without_an_outcome_is_lost(local: LocalScheduler, tmp_path: Path) -> None:
    pid_file = tmp_path / "pgid"
    script = job(tmp_path / "work", f"echo $$ > {pid_file}\nsleep 30")
    job_id = local.submit(Submission(script, "t.lost", script.parent))
    poll(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    wrapper = json.loads(local.files.pid(job_id).read_text())["pid"]

    os.kill(wrapper, signal.SIGKILL)

    poll(lambda: row_of(local, job_id).state != "RUNNING", timeout=5)
    row = row_of(local, job_id)
    assert (row.state, row.reason) == ("FAILED", "lost")
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)  # the orphaned job, for tidiness


def test_afterany_waits_for_the_job_it_names_to_end(local: LocalScheduler, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    order = tmp_path / "order"
    first = job(tmp_path / "one", f"while [ ! -e {gate} ]; do sleep 0.1; done; echo 1 >> {order}")
    second = job(tmp_path / "two", f"echo 2 >> {order}; exit 3")
    one = local.submit(Submission(first, "t.chain.1", first.parent))
    two = local.submit(
        Submission(
            second,
            "t.chain.1.link2",
            second.parent,
            extra_args=(f"--dependency=afterany:{one}", "--kill-on-invalid-dep=yes"),
        )
    )
    poll(lambda: row_of(local, one).state == "RUNNING")
    time.sleep(1)
    waiting = row_of(local, two)
    assert (waiting.state, waiting.reason) == ("PENDING", "Dependency")
    assert not order.exists()
    gate.touch()
    assert wait_until_finished(local, two).exit_code == 3
    assert order.read_text().split() == ["1", "2"]
    # Behind a job that does not exist it runs at once, as under SLURM 22.05.
    three = local.submit(
        Submission(second, "t.x", second.parent, extra_args=("--dependency=afterany:999",))
    )
    assert wait_until_finished(local, three).state == "FAILED"


def test_a_job_cancelled_while_it_waits_never_runs(local: LocalScheduler, tmp_path: Path) -> None:
    first = job(tmp_path / "one", "sleep 30")
    marker = tmp_path / "ran"
    second = job(tmp_path / "two", f"touch {marker}")
    one = local.submit(Submission(first, "t.a", first.parent))
    two = local.submit(
        Submission(second, "t.b", second.parent, extra_args=("-d", f"afterany:{one}"))
    )
    poll(lambda: row_of(local, two).reason == "Dependency")
    local.cancel([two, one])
    assert wait_until_finished(local, two).state == "CANCELLED"
    assert wait_until_finished(local, one).state == "CANCELLED"
    assert not marker.exists()


@pytest.mark.parametrize("spec", ["afterok:1", "afterany:", "afterany:1,2", "singleton"])
def test_other_dependencies_are_refused(local: LocalScheduler, tmp_path: Path, spec: str) -> None:
    script = job(tmp_path / "work", "true")
    with pytest.raises(SchedulerError, match="supports only --dependency=afterany"):
        local.submit(Submission(script, "t", script.parent, extra_args=(f"--dependency={spec}",)))


def test_a_missing_output_folder_fails_the_job_like_slurm(
    local: LocalScheduler, tmp_path: Path
) -> None:
    script = job(tmp_path / "work", "echo never", "#SBATCH --output=missing/%j.log")
    row = wait_until_finished(local, local.submit(Submission(script, "t.nolog", script.parent)))
    # SLURM 22.05: FAILED, ExitCode 0:53, Reason=JobLaunchFailure; the folder is not created.
    assert (row.state, row.exit_code, row.signal) == ("FAILED", 0, LAUNCH_FAILURE_SIGNAL)
    assert row.reason is not None and row.reason.startswith("JobLaunchFailure")
    assert not (script.parent / "missing").exists()


def test_submit_refuses_what_sbatch_refuses(local: LocalScheduler, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(SchedulerError, match="cannot read the script"):
        local.submit(Submission(work / "absent.sbatch", "t.x", tmp_path))
    script = job(work, "true", "#SBATCH --time=soon")
    with pytest.raises(SchedulerError, match="invalid time limit 'soon'"):
        local.submit(Submission(script, "t.x", work))
    assert local.query("", None) == []


def test_srun_inside_a_job_passes_hostile_arguments_byte_exact(
    local: LocalScheduler, tmp_path: Path
) -> None:
    record = tmp_path / "argv"
    words = " ".join(shlex.quote(value) for value in HOSTILE.values())
    script = job(
        tmp_path / "work",
        f"srun -n 1 --ntasks 1 -c2 --export=ALL -- printf '%s\\0' {words} > {record}",
    )
    row = wait_until_finished(local, local.submit(Submission(script, "t.srun", script.parent)))
    assert row.state == "COMPLETED"
    assert record.read_bytes().split(b"\0")[:-1] == [v.encode() for v in HOSTILE.values()]


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--"],
        ["-n", "2", "--nodes=1", "-c4"],
        ["--ntasks", "1", "--export", "ALL,FOO=a b", "--label", "-u"],
        ["--cpu-bind=none", "-K1", "--mpi", "pmix", "--"],
    ],
    ids=["none", "dashdash", "short", "long-separate", "mixed"],
)
def test_srun_stub_drops_its_options_and_keeps_the_command(
    tmp_path: Path, options: list[str]
) -> None:
    stub = tmp_path / "srun"
    stub.write_text(SRUN_STUB)
    stub.chmod(0o755)
    values = list(HOSTILE.values())
    done = subprocess.run(
        [str(stub), *options, "printf", "%s\\0", *values], capture_output=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(b"\0")[:-1] == [v.encode() for v in values]


def test_srun_stub_without_a_command_fails(tmp_path: Path) -> None:
    stub = tmp_path / "srun"
    stub.write_text(SRUN_STUB)
    stub.chmod(0o755)
    for argv in ([], ["-n", "1"], ["-n"]):
        done = subprocess.run([str(stub), *argv], capture_output=True, timeout=10)
        assert done.returncode == 1 and b"srun (oellm local)" in done.stderr


def test_demo_bundle_runs_to_completed(local: LocalScheduler, tmp_path: Path) -> None:
    output = tmp_path / "out"
    bundle = compile_bundle(
        CompileRequest(experiment=EXAMPLES / "demo.yaml", env={"OUTPUT_DIR": str(output)})
    )
    write_bundle(bundle, tmp_path / "bundle")
    (output / "demo").mkdir(parents=True)  # sbatch does not create the log's folder either

    job_id = local.submit(
        Submission(Path("jobs/demo.sbatch"), "oellm.demo.demo", tmp_path / "bundle")
    )
    row = wait_until_finished(local, job_id)

    assert (row.state, row.exit_code) == ("COMPLETED", 0)
    markers = output / "demo" / ".oellm"
    assert (markers / f"{job_id}.exit").read_text() == "0\n"
    assert (markers / f"{job_id}.started").exists()
    log = (output / "demo" / f"slurm-{job_id}.log").read_text()
    assert log.startswith("hello from demo on ") and log.endswith("done\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300),
        ("5:30", 330),
        ("00:00:02", 2),
        ("1:02:03", 3723),
        ("2-3", 2 * 86400 + 3 * 3600),
        ("2-3:04", 2 * 86400 + 3 * 3600 + 240),
        ("2-3:04:05", 2 * 86400 + 3 * 3600 + 245),
        ("0", None),
        ("UNLIMITED", None),
        ("infinite", None),
    ],
)
def test_time_limit_formats(text: str, seconds: int | None) -> None:
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize("text", ["", "1:2:3:4", "x", "1-", "-5", "1-2-3", "1.5", "٣"])
def test_bad_time_limits(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time limit"):
        parse_time_limit(text)


def test_directives_stop_at_the_first_command() -> None:
    script = (
        "#!/bin/bash\n"
        "# a comment\n"
        "\n"
        "#SBATCH --output='my logs/%j.log'  # trailing comment\n"
        "#SBATCH -t 5 --job-name x\n"
        "#SBATCHED --time=1\n"
        "echo hi\n"
        "#SBATCH --time=99\n"
    )
    words = read_directives(script)
    assert words == ["--output=my logs/%j.log", "-t", "5", "--job-name", "x"]
    assert pick_options(words) == {"output": "my logs/%j.log", "time": "5", "job-name": "x"}
    assert pick_options(["-ologs/a", "--partition", "debug", "-e", "err"]) == {
        "output": "logs/a",
        "error": "err",
    }


def test_filename_patterns() -> None:
    assert substitute("logs/%x-%j-%5j-%%j-%q.log", "42", "t.a") == "logs/t.a-42-00042-%j-%q.log"
