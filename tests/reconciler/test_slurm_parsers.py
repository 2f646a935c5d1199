"""The SLURM scheduler's pure pieces on output recorded from the real local cluster
(tests/slurm/recorded): parsers, argv builders, the squeue/sacct merge, error classification,
and the scheduler's calls through a fake at the subprocess boundary.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from oellm.reconciler.errors import SchedulerError, SchedulerUnavailable, SubmissionRefused
from oellm.reconciler.schedulers import FINISHED, SchedulerJob, Submission
from oellm.reconciler.schedulers.slurm import (
    SACCT_STATES,
    SlurmScheduler,
    failure,
    sacct_argv,
    sacct_time,
    sbatch_argv,
    sbatch_failure,
    scancel_argv,
    squeue_argv,
)
from oellm.reconciler.schedulers.slurm_parse import (
    SACCT_FIELDS,
    job_state,
    merge,
    parse_exit_code,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    read_queue,
    select,
    split_squeue_line,
)
from oellm.shell import Completed
from tests.reconciler.fakes import FakeRun, ok, recorded

SINCE = datetime(2026, 11, 26, 12, 0, 0)


def sacct_stdout(name: str) -> str:
    """A recorded sacct answer in our format: the recordings were taken with a Comment column
    after NodeList (SACCT_FIELDS + Comment); the comment may hold `|`, so cut after field 7."""
    recording = recorded(name)
    assert recording.command.split("--format=")[1].split()[0] == ",".join(SACCT_FIELDS) + ",Comment"
    return "".join(
        "|".join(line.split("|", 7)[:7]) + "\n" for line in recording.stdout.splitlines()
    )


def by_id(jobs: Sequence[SchedulerJob]) -> dict[str, SchedulerJob]:
    found = {job.job_id: job for job in jobs}
    assert len(found) == len(jobs), "one row per job id"
    return found


# --- recordings are read as the README says --------------------------------------------------


def test_recording_reader_splits_status_stdout_and_stderr() -> None:
    down = recorded("squeue_ctld_down.txt")
    assert down.command == "squeue --me -t all --noheader --format='%i|%j|%T|%r|%k'"
    assert (down.returncode, down.stdout) == (1, "")
    assert down.stderr == (
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    )
    assert not recorded("sacct_finished_with_states.txt").stdout.startswith("#")


# --- argv builders ---------------------------------------------------------------------------


def test_sbatch_argv_tags_name_and_comment_and_keeps_extra_args_before_the_script() -> None:
    submission = Submission(
        script=Path("scripts/train.sh"),
        tag="oellm.0a1b2c3d.train.0",
        workdir=Path("/bundles/b"),
        extra_args=("--hold", "--partition=batch"),
    )
    assert sbatch_argv(submission) == [
        "sbatch",
        "--parsable",
        "--job-name=train.0@oellm.0a1b2c3d",
        "--comment=oellm.0a1b2c3d.train.0",
        "--hold",
        "--partition=batch",
        "scripts/train.sh",
    ]


def test_squeue_argv_asks_once_for_all_of_my_jobs() -> None:
    assert squeue_argv() == [
        "squeue",
        "--me",
        "-t",
        "all",
        "--noheader",
        "--format=%i|%j|%T|%r|%k",
    ]
    # The recorded command is the one we build (shell quotes aside).
    assert recorded("squeue_mix.txt").command.replace("'", "") == " ".join(squeue_argv())


def test_sacct_argv_has_an_explicit_window_and_every_state() -> None:
    assert sacct_argv(SINCE, user="alice") == [
        "sacct",
        "-X",
        "-P",
        "-n",
        "-u",
        "alice",
        "-S",
        "2026-11-26T12:00:00",
        "-E",
        "now",
        "-s",
        "BF,CA,CD,DL,F,NF,OOM,PD,PR,R,RQ,RS,RV,S,TO",
        "--format=JobID,JobName,State,ExitCode,Start,End,NodeList",
    ]
    # PD makes pending jobs appear, CA jobs cancelled while pending (sacct_finished_with_states).
    assert {"PD", "CA", "R"} <= set(SACCT_STATES.split(","))


def test_sacct_time_is_local_and_whole_seconds() -> None:
    assert sacct_time(datetime(2026, 1, 2, 3, 4, 5, 999_999)) == "2026-01-02T03:04:05"
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert sacct_time(aware) == aware.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    two_hours_east = timezone(timedelta(hours=2))
    assert sacct_time(aware.astimezone(two_hours_east)) == sacct_time(aware)


def test_scancel_argv_is_one_call_for_all_ids() -> None:
    assert scancel_argv(["12", "7_[0-3]", "9_1"]) == ["scancel", "12", "7_[0-3]", "9_1"]


# --- parse_sbatch -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [("42\n", "42"), ("42;oellm\n", "42"), ("  42 ", "42"), ("note from a plugin\n43\n", "43")],
)
def test_parse_sbatch(stdout: str, job_id: str) -> None:
    assert parse_sbatch(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "\n", "Submitted batch job 42\n", "42_1", ";oellm"])
def test_parse_sbatch_rejects_anything_else(stdout: str) -> None:
    with pytest.raises(ValueError, match="no job id"):
        parse_sbatch(stdout)


# --- parse_squeue -----------------------------------------------------------------------------


def test_parse_squeue_on_a_mix_of_states() -> None:
    jobs = parse_squeue(recorded("squeue_mix.txt").stdout)
    assert len(jobs) == 16, "13 rows, one of them 4 folded pending tasks"
    assert jobs[0].job_id == "3", "rows keep squeue's (unsorted) order"
    rows = by_id(jobs)
    assert rows["3"] == SchedulerJob(
        job_id="3",
        name="oellm.rec.fail",
        state="FAILED",
        raw_state="FAILED",
        reason="NonZeroExitCode",
        source="queue",
    )
    assert (rows["9_0"].state, rows["9_0"].reason) == ("RUNNING", None)
    assert "7_[0-3]" not in rows
    for task in ("7_0", "7_1", "7_2", "7_3"):
        assert (rows[task].state, rows[task].reason) == ("PENDING", "BeginTime")
    assert (rows["8"].reason, rows["6"].reason) == ("Dependency", "JobHeldUser")
    assert (rows["5"].name, rows["5"].state) == ("oellm.rec.running", "RUNNING")
    assert all(job.exit_code is None and job.source == "queue" for job in jobs)


def test_squeue_comment_may_hold_pipes_and_null_means_none() -> None:
    lines = recorded("squeue_mix.txt").stdout.splitlines()
    with_pipe = next(line for line in lines if line.startswith("5|"))
    assert split_squeue_line(with_pipe) == (
        "5",
        "oellm.rec.running",
        "RUNNING",
        None,
        'oellm bundle=0a1b2c3d job=running attempt=1 | note: "spaces" and a pipe',
    )
    no_comment = next(line for line in lines if line.startswith("9_1|"))
    assert split_squeue_line(no_comment) == (
        "9_1",
        "oellm.rec.running_array",
        "RUNNING",
        None,
        None,
    )
    with pytest.raises(ValueError, match="3 of 5"):
        split_squeue_line("1|name|RUNNING")


def test_parse_squeue_of_nothing_is_empty() -> None:
    assert parse_squeue(recorded("squeue_unknown_jobs_multi.txt").stdout) == []
    assert parse_squeue("\n") == []


# --- parse_sacct ------------------------------------------------------------------------------


def test_parse_sacct_on_finished_jobs_including_those_cancelled_while_pending() -> None:
    jobs = parse_sacct(sacct_stdout("sacct_finished_with_states.txt"))
    rows = by_id(jobs)
    assert len(jobs) == 16, "13 rows, one of them 4 folded tasks cancelled while pending"
    assert rows["3"] == SchedulerJob(
        job_id="3",
        name="oellm.rec.fail",
        state="FAILED",
        raw_state="FAILED",
        exit_code=3,
        signal=0,
        start="2026-11-26T12:26:49",
        end="2026-11-26T12:26:49",
        nodes="vm",
        source="accounting",
    )
    held = rows["6"]
    assert (held.state, held.raw_state) == ("CANCELLED", "CANCELLED by 0")
    assert (held.start, held.end, held.nodes) == (None, "2026-11-26T12:26:52", None)
    assert [rows[f"7_{i}"].state for i in range(4)] == ["CANCELLED"] * 4
    assert (rows["1"].state, rows["1"].exit_code) == ("TIMEOUT", 0)
    assert (rows["4_2"].state, rows["4_2"].exit_code) == ("FAILED", 2)
    assert [job.job_id for job in jobs if job.state == "COMPLETED"] == ["2", "4_0", "4_1", "4_3"]


def test_parse_sacct_without_states_misses_jobs_cancelled_while_pending() -> None:
    plain = by_id(parse_sacct(sacct_stdout("sacct_finished.txt")))
    assert {"6", "8", "7_[0-3]"}.isdisjoint(plain)
    # The ctld-down recording is the same answer: sacct asks slurmdbd, not slurmctld.
    assert recorded("sacct_ctld_down.txt").returncode == 0
    assert parse_sacct(sacct_stdout("sacct_ctld_down.txt")) == parse_sacct(
        sacct_stdout("sacct_finished.txt")
    )


def test_parse_sacct_in_flight_has_no_end_yet() -> None:
    rows = by_id(parse_sacct(sacct_stdout("sacct_in_flight.txt")))
    assert (rows["5"].state, rows["5"].end, rows["5"].start) == (
        "RUNNING",
        None,
        "2026-11-26T12:26:49",
    )
    assert rows["2"].state == "COMPLETED"


def test_parse_sacct_reads_the_seven_fields_we_ask_for() -> None:
    # The recordings carry an eighth field, Comment; our format stops at NodeList.
    line = "12|odd|name|OUT_OF_MEMORY|0:125|2026-11-26T12:00:00|2026-11-26T12:01:00|vm"
    (job,) = parse_sacct(line + "\n")
    assert (job.job_id, job.name, job.state) == ("12", "odd|name", "OUT_OF_MEMORY")
    assert (job.exit_code, job.signal, job.nodes) == (0, 125, "vm")
    with pytest.raises(ValueError, match="too few fields"):
        parse_sacct("12|name|RUNNING\n")


@pytest.mark.parametrize(
    ("text", "code", "signal"),
    [("3:0", 3, 0), ("0:53", 0, 53), ("0:0", 0, 0), ("", None, None), ("x:y", None, None)],
)
def test_parse_exit_code(text: str, code: int | None, signal: int | None) -> None:
    assert parse_exit_code(text) == (code, signal)


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("CANCELLED by 0", "CANCELLED"),
        ("CANCELLED by 1234", "CANCELLED"),
        ("COMPLETING", "COMPLETING"),
        ("NODE_FAIL", "NODE_FAIL"),
        ("REQUEUE_HOLD", "OTHER"),
        ("SPECIAL_EXIT", "OTHER"),
        ("STOPPED", "OTHER"),
        ("", "OTHER"),
    ],
)
def test_job_state(raw: str, state: str) -> None:
    assert job_state(raw) == state


def test_unknown_states_keep_their_text() -> None:
    (job,) = parse_squeue("12|oellm.x|SPECIAL_EXIT|None|(null)\n")
    assert (job.state, job.raw_state) == ("OTHER", "SPECIAL_EXIT")


# --- merge and select ------------------------------------------------------------------------


def queue_row(job_id: str, state: str, name: str = "oellm.t.a") -> SchedulerJob:
    (job,) = parse_squeue(f"{job_id}|{name}|{state}|None|(null)\n")
    return job


def acct_row(
    job_id: str, state: str, name: str = "oellm.t.a", exit_code: str = "0:0"
) -> SchedulerJob:
    (job,) = parse_sacct(f"{job_id}|{name}|{state}|{exit_code}|None|Unknown|None assigned\n")
    return job


def test_merge_prefers_a_live_squeue_row() -> None:
    (job,) = merge([queue_row("1", "RUNNING")], [acct_row("1", "PENDING")])
    assert (job.state, job.source) == ("RUNNING", "queue")


def test_merge_prefers_sacct_for_a_finished_job_it_has_the_exit_code() -> None:
    (job,) = merge([queue_row("1", "FAILED")], [acct_row("1", "FAILED", exit_code="3:0")])
    assert (job.state, job.exit_code, job.source) == ("FAILED", 3, "accounting")


def test_merge_keeps_squeue_end_state_when_sacct_lags() -> None:
    (job,) = merge([queue_row("1", "COMPLETED")], [acct_row("1", "RUNNING")])
    assert (job.state, job.source) == ("COMPLETED", "queue")


def test_merge_keeps_rows_only_one_side_knows_in_order() -> None:
    jobs = merge(
        [queue_row("5", "PENDING"), queue_row("2", "COMPLETED")],
        [acct_row("1", "TIMEOUT"), acct_row("2", "COMPLETED"), acct_row("3", "FAILED")],
    )
    assert [(j.job_id, j.source) for j in jobs] == [
        ("5", "queue"),
        ("2", "accounting"),
        ("1", "accounting"),
        ("3", "accounting"),
    ]


def test_merge_on_the_recordings_has_one_row_per_job() -> None:
    queue = parse_squeue(recorded("squeue_mix.txt").stdout)
    accounting = parse_sacct(sacct_stdout("sacct_in_flight.txt"))
    rows = by_id(merge(queue, accounting))
    assert set(rows) == {j.job_id for j in queue} | {j.job_id for j in accounting}
    assert (rows["5"].state, rows["5"].source) == ("RUNNING", "queue")
    assert (rows["3"].state, rows["3"].exit_code, rows["3"].source) == ("FAILED", 3, "accounting")
    assert (rows["6"].state, rows["6"].source) == ("PENDING", "queue")


def test_merge_takes_the_name_from_squeue_over_sacct_placeholder() -> None:
    (job,) = merge([queue_row("1", "COMPLETED")], [acct_row("1", "COMPLETED", name="allocation")])
    assert (job.name, job.source, job.exit_code) == ("oellm.t.a", "accounting", 0)


def test_select_filters_by_prefix() -> None:
    jobs = parse_squeue(recorded("squeue_mix.txt").stdout)
    assert {j.job_id for j in select(jobs, "oellm.rec.array")} == {"4_0", "4_1", "4_2", "4_3"}
    assert len(select(jobs, "oellm.rec.")) == 16
    assert select(jobs, "oellm.other.") == []


def test_select_matches_sacct_placeholder_only_by_known_id() -> None:
    placeholder = acct_row("21", "COMPLETED", name="allocation")
    other_array = acct_row("7_2", "FAILED", name="allocation")
    jobs = [placeholder, other_array, acct_row("22", "COMPLETED", name="oellm.t.b")]
    assert [j.job_id for j in select(jobs, "oellm.t.")] == ["22"]
    assert [j.job_id for j in select(jobs, "")] == ["22"], "the placeholder matches no prefix"
    assert [j.job_id for j in select(jobs, "oellm.t.", known_ids={"21"})] == ["21", "22"]
    # An array job id covers its tasks; a known id is taken whatever the name.
    assert [j.job_id for j in select(jobs, "nothing", known_ids=["7"])] == ["7_2"]


# --- error classification --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["sbatch_ctld_down.txt", "squeue_ctld_down.txt", "scancel_ctld_down.txt"]
)
def test_controller_down_is_unavailable(name: str) -> None:
    error = failure(recorded(name).completed(), "cmd")
    assert isinstance(error, SchedulerUnavailable)
    assert "Unable to contact slurm controller" in str(error)
    assert str(error).startswith(recorded(name).command.split()[0] + " ")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (
            "sbatch_invalid_partition.txt",
            "invalid partition specified: nosuchpart; "
            "Batch job submission failed: Invalid partition name specified",
        ),
        ("sbatch_invalid_option.txt", "Invalid --time specification"),
    ],
)
def test_sbatch_saying_no_is_a_refusal_for_good(name: str, why: str) -> None:
    error = sbatch_failure(recorded(name).completed())
    assert isinstance(error, SubmissionRefused)
    assert error.why == why


def test_sbatch_not_answering_or_over_a_submit_limit_is_not_a_refusal() -> None:
    down = sbatch_failure(recorded("sbatch_ctld_down.txt").completed())
    assert isinstance(down, SchedulerUnavailable)
    limit = Completed(
        ("sbatch",),
        1,
        "",
        "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
        "(job submit limit, user's size and/or time limits)\n",
    )
    assert type(sbatch_failure(limit)) is SchedulerError
    # No `sbatch: error:` line (killed, say): the outcome stays unknown.
    assert type(sbatch_failure(Completed(("sbatch",), 1, "", "Killed\n"))) is SchedulerError


def test_an_unknown_job_id_is_an_error_not_unavailable() -> None:
    done = recorded("squeue_unknown_job.txt").completed()
    error = failure(done, "squeue")
    assert type(error) is SchedulerError
    assert "Invalid job id specified" in error.output and "exit 1" in error.message


# --- the scheduler through a fake runner ------------------------------------------------------


SUBMISSION = Submission(script=Path("job.sh"), tag="oellm.t.a", workdir=Path("/w"))


def test_submit_runs_sbatch_in_the_workdir_and_returns_the_id() -> None:
    fake = FakeRun({"sbatch": ok("57;oellm\n")})
    assert SlurmScheduler(run=fake, submit_timeout=7).submit(SUBMISSION) == "57"
    assert fake.calls == [(sbatch_argv(SUBMISSION), 7, Path("/w"))]


def test_submit_with_controller_down_is_unavailable() -> None:
    fake = FakeRun({"sbatch": recorded("sbatch_ctld_down.txt").completed()})
    with pytest.raises(SchedulerUnavailable, match="Unable to contact slurm controller"):
        SlurmScheduler(run=fake).submit(SUBMISSION)


def test_submit_rejected_is_a_refusal_with_the_output() -> None:
    stderr = "sbatch: error: invalid partition specified: nope\n"
    fake = FakeRun({"sbatch": Completed((), 1, "", stderr)})
    with pytest.raises(SubmissionRefused) as caught:
        SlurmScheduler(run=fake).submit(SUBMISSION)
    assert caught.value.why == "invalid partition specified: nope"
    assert "invalid partition" in caught.value.output


def test_submit_with_unreadable_output_is_an_error() -> None:
    fake = FakeRun({"sbatch": ok("Submitted batch job 57\n")})
    with pytest.raises(SchedulerError, match="no job id"):
        SlurmScheduler(run=fake).submit(SUBMISSION)


def test_query_without_since_asks_squeue_only() -> None:
    fake = FakeRun({"squeue": recorded("squeue_mix.txt").completed()})
    jobs = SlurmScheduler(run=fake, query_timeout=4).query("oellm.rec.fail", None)
    assert [j.job_id for j in jobs] == ["3"]
    assert fake.calls == [(squeue_argv(), 4, None)]


def test_query_with_since_asks_squeue_and_sacct_once_each() -> None:
    fake = FakeRun(
        {
            "squeue": recorded("squeue_mix.txt").completed(),
            "sacct": ok(sacct_stdout("sacct_finished_with_states.txt")),
        }
    )
    scheduler = SlurmScheduler(run=fake, user="alice")
    jobs = by_id(scheduler.query("oellm.rec.", SINCE))
    assert sorted(fake.programs()) == ["sacct", "squeue"]
    assert [argv for argv, _, _ in fake.calls if argv[0] == "sacct"] == [
        sacct_argv(SINCE, user="alice")
    ]
    assert (jobs["6"].state, jobs["6"].source) == ("PENDING", "queue")
    assert (jobs["3"].exit_code, jobs["3"].source) == (3, "accounting")
    assert scheduler.query("oellm.nothing.", SINCE) == []


# Another bundle's jobs among ours: a folded array, one ended (in sacct too), a task of another
# array whose id a record names (found by id, not by tag), the placeholder name, and one whose
# name in sacct is ours (renamed since: squeue's name counts, `merge`).
OTHERS_SQUEUE = (
    "40_[0-999]|jobs.array-1@oellm.otherkey|PENDING|JobHeldUser|(null)\n"
    "41|x@oellm.otherkey|COMPLETED|None|(null)\n"
    "42_[0-5%2]|y@oellm.otherkey|PENDING|JobArrayTaskLimit|(null)\n"
    "43|allocation|COMPLETED|None|(null)\n"
    "45|z@oellm.otherkey|COMPLETED|None|(null)\n"
)
OTHERS_SACCT = (
    "41|x@oellm.otherkey|COMPLETED|0:0|2026-11-26T12:26:49|2026-11-26T12:26:49|vm\n"
    "45|oellm.rec.renamed|COMPLETED|0:0|2026-11-26T12:26:49|2026-11-26T12:26:49|vm\n"
    "40_7|jobs.array-1@oellm.otherkey|CANCELLED by 0|0:0|None|None|None assigned\n"
    "42_3|allocation|COMPLETED|0:0|2026-11-26T12:26:49|2026-11-26T12:26:50|vm\n"
    "44|allocation|COMPLETED|0:0|2026-11-26T12:26:49|2026-11-26T12:26:50|vm\n"
)


@pytest.mark.parametrize("prefix", ["oellm.rec.", "oellm.rec.pending", "oellm.otherkey.", ""])
@pytest.mark.parametrize("known", [(), ("9",), ("42_3", "44"), ("40", "7_2", "43")])
def test_query_makes_only_the_rows_it_may_keep_and_keeps_what_it_kept(
    prefix: str, known: tuple[str, ...]
) -> None:
    """Rows of other bundles are not made (`read_queue`), and the query answers exactly what
    `select` of every row merged answers; every live job of the user is counted."""
    squeue = recorded("squeue_mix.txt").stdout + OTHERS_SQUEUE
    sacct = sacct_stdout("sacct_finished_with_states.txt") + OTHERS_SACCT
    fake = FakeRun({"squeue": ok(squeue), "sacct": ok(sacct)})
    scheduler = SlurmScheduler(run=fake)
    found = scheduler.query(prefix, SINCE, known_ids=known)
    every = parse_squeue(squeue)
    assert found == select(merge(every, parse_sacct(sacct)), prefix, known)
    assert scheduler.user_live == sum(1 for job in every if job.state not in FINISHED)
    ours = parse_squeue(recorded("squeue_mix.txt").stdout)
    assert scheduler.user_live == sum(1 for j in ours if j.state not in FINISHED) + 1000 + 6
    queue = read_queue(squeue, prefix, known)
    assert len(queue.rows) < len(every) or prefix == ""
    assert {job.job_id for job in queue.rows}.isdisjoint(queue.others)
    assert len(queue.rows) + len(queue.others) == len(every)


def test_query_with_controller_down_is_unavailable_whatever_sacct_says() -> None:
    fake = FakeRun(
        {
            "squeue": recorded("squeue_ctld_down.txt").completed(),
            "sacct": ok(sacct_stdout("sacct_finished_with_states.txt")),
        }
    )
    with pytest.raises(SchedulerUnavailable, match="squeue failed"):
        SlurmScheduler(run=fake).query("oellm.", SINCE)
    assert sorted(fake.programs()) == ["sacct", "squeue"]
    # Both failing: the controller's answer is the one the user reads.
    fake.answers["sacct"] = Completed((), 1, "", "sacct: error: slurmdbd is down\n")
    with pytest.raises(SchedulerUnavailable, match="squeue failed"):
        SlurmScheduler(run=fake).query("oellm.", SINCE)


def test_query_asks_squeue_and_sacct_at_once() -> None:
    """A round waits for the slower of the two, not for both in turn: squeue here answers only
    once sacct has been asked (asked one after the other, it would wait in vain)."""
    asked = threading.Event()
    fake = FakeRun({"squeue": ok(), "sacct": ok()})

    def run(
        argv: Sequence[str], timeout: float, cwd: Path | None = None, env: Any = None
    ) -> Completed:
        if argv[0] == "sacct":
            asked.set()
        elif not asked.wait(10):
            return Completed(tuple(argv), 1, "", "squeue: asked alone")
        return fake(argv, timeout, cwd, env)

    assert SlurmScheduler(run=run).query("oellm.", SINCE) == []
    assert sorted(fake.programs()) == ["sacct", "squeue"]


def test_query_with_sacct_failing_is_unavailable() -> None:
    fake = FakeRun(
        {
            "squeue": ok(),
            "sacct": Completed((), 1, "", "sacct: error: Slurm accounting storage is disabled\n"),
        }
    )
    with pytest.raises(SchedulerUnavailable, match="accounting storage is disabled"):
        SlurmScheduler(run=fake).query("oellm.", SINCE)


def test_cancel_is_one_call_and_nothing_for_no_ids() -> None:
    fake = FakeRun({"scancel": recorded("scancel_unknown_job.txt").completed()})
    scheduler = SlurmScheduler(run=fake)
    scheduler.cancel([])
    assert fake.calls == []
    scheduler.cancel(["999999", "12"])
    assert [argv for argv, _, _ in fake.calls] == [["scancel", "999999", "12"]]


def test_cancel_with_controller_down_is_unavailable() -> None:
    fake = FakeRun({"scancel": recorded("scancel_ctld_down.txt").completed()})
    with pytest.raises(SchedulerUnavailable, match="exit 8"):
        SlurmScheduler(run=fake).cancel(["999999"])


def test_pending_array_tasks_are_read_whole_or_not_at_all() -> None:
    """squeue and sacct cut a folded index list at 64 characters: such a row must never be
    read as fewer tasks (their records would be called lost and submitted again)."""
    for name, parse in (
        ("squeue_array_bitstr_len_0.txt", parse_squeue),
        ("sacct_array_bitstr_len_0.txt", parse_sacct),
    ):
        whole = parse(recorded(name).stdout)
        assert len(whole) == 60, name
        assert (whole[0].job_id, whole[-1].job_id) == ("33287_2", "33287_992")
        assert "33287_779" in {job.job_id for job in whole} and "33287_780" in {
            job.job_id for job in whole
        }
    for name, parse in (
        ("squeue_array_truncated.txt", parse_squeue),
        ("sacct_array_truncated.txt", parse_sacct),
    ):
        with pytest.raises(ValueError, match="not a whole array id"):
            parse(recorded(name).stdout)
    stepped = parse_sacct("7_[0-117:3%4]|x|CANCELLED by 0|0:0|None|None|None assigned\n")
    assert [job.job_id for job in stepped][:3] == ["7_0", "7_3", "7_6"] and len(stepped) == 40


def test_queries_ask_for_whole_lists_and_wait_on_a_cut_one() -> None:
    fake = FakeRun({"squeue": recorded("squeue_array_truncated.txt").completed()})
    with pytest.raises(SchedulerUnavailable, match="cannot read"):
        SlurmScheduler(run=fake).query("oellm.", None)
    assert fake.envs[0] is not None and fake.envs[0]["SLURM_BITSTR_LEN"] == "0"
    assert fake.envs[0]["PATH"] == os.environ["PATH"], "the rest of the environment is kept"
    fake = FakeRun({"squeue": ok(), "sacct": ok()})
    SlurmScheduler(run=fake).query("oellm.", SINCE)
    assert [env["SLURM_BITSTR_LEN"] for env in fake.envs if env is not None] == ["0", "0"]


def test_exclude_is_one_scontrol_update_of_all_queued_ids() -> None:
    fake = FakeRun({"scontrol": ok()})
    scheduler = SlurmScheduler(run=fake)
    scheduler.exclude([], ["bad01"])
    scheduler.exclude(["7"], [])
    assert fake.calls == []
    scheduler.exclude(["7", "8_2"], ["bad01", "bad02"])
    assert [argv for argv, _, _ in fake.calls] == [
        ["scontrol", "update", "JobId=7,8_2", "ExcNodeList=bad01,bad02"]
    ]


def test_exclude_of_a_job_that_started_meanwhile_is_an_error() -> None:
    recording = recorded("scontrol_exclude_running.txt")
    fake = FakeRun({"scontrol": recording.completed()})
    with pytest.raises(SchedulerError, match="no longer pending") as caught:
        SlurmScheduler(run=fake).exclude(["32962", "32961"], ["vm"])
    assert not isinstance(caught.value, SchedulerUnavailable)
