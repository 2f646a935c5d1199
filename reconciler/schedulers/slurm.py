"""The SLURM scheduler: pure argv builders, the errors a failed command means, and
`SlurmScheduler`, which runs them through the one door to the shell (`oellm.shell`) and reads the
answers with `slurm_parse`. Facts cited as "anchors 3.x" are in shared/reference/anchors.md.
"""

from __future__ import annotations

import getpass
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from oellm import shell
from oellm.errors import CommandError, CommandTimeout
from oellm.reconciler import tags
from oellm.reconciler.errors import SchedulerError, SchedulerUnavailable, SubmissionRefused
from oellm.reconciler.schedulers import SchedulerJob, Submission
from oellm.reconciler.schedulers.early import EarlyQuery
from oellm.reconciler.schedulers.slurm_parse import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    merge,
    parse_sacct,
    parse_sbatch,
    read_queue,
    select,
)
from oellm.shell import Completed

SUBMIT_TIMEOUT_S = 60.0  # sbatch alone retries ~9 s when slurmctld is down; a busy one is slower
QUERY_TIMEOUT_S = 30.0
CANCEL_TIMEOUT_S = 30.0
# Bytes of job ids per scancel command line: far below any system's ARG_MAX.
SCANCEL_ARGV_BYTES = 64 * 1024

# Every state sacct 22.05 accepts for -s (others, e.g. CF, are "not supported / accounted").
# With -s, sacct lists jobs that were in one of these states during -S..-E, which is what makes
# jobs cancelled while pending appear at all (tests/slurm/recorded/sacct_finished*.txt).
SACCT_STATES = "BF,CA,CD,DL,F,NF,OOM,PD,PR,R,RQ,RS,RV,S,TO"
# stderr texts that mean "slurmctld did not answer or is overloaded; ask again later", not "no".
# The first is recorded (tests/slurm/recorded/*_ctld_down.txt); the others are from anchors 3.3.
UNAVAILABLE_MARKERS = (
    "Unable to contact slurm controller",
    "Socket timed out on send/recv operation",
    "Slurm temporarily unable to accept job",
)
# A refusal that may pass by itself: a submit limit of the user or QOS (MaxSubmitJobs), which
# frees up as jobs end. Such a submission is tried again, not ended for good.
TRANSIENT_REFUSALS = ("job submit limit", "MaxSubmitJob", "AssocMaxSubmitJobLimit")

# squeue and sacct cut an array's folded index list at 64 characters unless this is 0
# (tests/slurm/recorded/squeue_array_truncated.txt); a cut list would lose tasks.
QUERY_ENV = {"SLURM_BITSTR_LEN": "0"}
T = TypeVar("T")


class Run(Protocol):
    """The shape of `shell.run`, so a test can pass a fake at the subprocess boundary."""

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed: ...


def available() -> bool:
    """Whether SLURM's client tools are installed here (chooses the default scheduler)."""
    return shutil.which("sbatch") is not None


# --- argv builders (pure) -------------------------------------------------------------------


def sbatch_argv(submission: Submission) -> list[str]:
    """`sbatch` for one submission, run from `submission.workdir`: a relative script path and
    relative `#SBATCH --output` paths resolve against that folder. The tag goes into the job
    name (the one field every site stores, anchors 3.2), job first (`tags.job_name`), and
    as it is into the comment (squeue `%k`; sacct shows it only where slurmdbd stores it)."""
    return [
        "sbatch",
        "--parsable",
        f"--job-name={tags.job_name(submission.tag)}",
        f"--comment={submission.tag}",
        *([f"--chdir={submission.chdir}"] if submission.chdir is not None else []),
        *submission.extra_args,
        str(submission.script),
    ]


def squeue_argv() -> list[str]:
    """All of this user's jobs slurmctld still holds, finished ones included (`-t all`) until
    MinJobAge. `--me` exists in 22.05 (tests/slurm/recorded/squeue_mix.txt)."""
    return ["squeue", "--me", "-t", "all", "--noheader", f"--format={SQUEUE_FORMAT}"]


def sacct_argv(since: datetime, user: str | None = None) -> list[str]:
    """One allocation row (`-X`) per job of `user` (default: who we run as) since `since`.

    An explicit `-S` is required: without it sacct searches only since midnight (anchors 3.2).
    sacct 22.05 has no `--me`, and for root it lists every user's jobs, hence `-u`.
    """
    return [
        "sacct",
        "-X",
        "-P",
        "-n",
        "-u",
        user if user is not None else getpass.getuser(),
        "-S",
        sacct_time(since),
        "-E",
        "now",
        "-s",
        SACCT_STATES,
        f"--format={','.join(SACCT_FIELDS)}",
    ]


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    return ["scancel", *job_ids]


def scancel_argvs(job_ids: Sequence[str], limit: int = SCANCEL_ARGV_BYTES) -> list[list[str]]:
    """`scancel` for many ids, split so that no command line passes `limit` bytes (the
    kernel refuses an exec whose arguments pass ARG_MAX, 2 MiB on Linux, less elsewhere)."""
    argvs: list[list[str]] = []
    batch: list[str] = []
    size = 0
    for job_id in job_ids:
        if batch and size + len(job_id) + 1 > limit:
            argvs.append(scancel_argv(batch))
            batch, size = [], 0
        batch.append(job_id)
        size += len(job_id) + 1
    if batch:
        argvs.append(scancel_argv(batch))
    return argvs


def exclude_argv(job_ids: Iterable[str], nodes: Iterable[str]) -> list[str]:
    """`scontrol update` of pending jobs' ExcNodeList (it replaces the list, so pass all the
    nodes to avoid). A job that is no longer pending makes it exit 1 (recorded in
    tests/slurm/recorded/scontrol_exclude_running.txt)."""
    return ["scontrol", "update", f"JobId={','.join(job_ids)}", f"ExcNodeList={','.join(nodes)}"]


def sacct_time(moment: datetime) -> str:
    """sacct reads times in the machine's local zone: convert an aware datetime to it; a naive
    one is taken as local already. Seconds only (sacct rejects fractions)."""
    local = moment.astimezone() if moment.tzinfo is not None else moment
    return local.strftime("%Y-%m-%dT%H:%M:%S")


# --- errors (pure) --------------------------------------------------------------------------


def failure(done: Completed, what: str) -> SchedulerError:
    """The error for a command that exited non-zero: SchedulerUnavailable when stderr says the
    controller did not answer, SchedulerError otherwise. Never read a non-zero exit alone as
    "SLURM is down" (`squeue -j <unknown id>` exits 1, anchors 3.2)."""
    output = (done.stdout + done.stderr).strip()
    message = f"{what} failed (exit {done.returncode})"
    if any(marker in output for marker in UNAVAILABLE_MARKERS):
        return SchedulerUnavailable(list(done.argv), message, output)
    return SchedulerError(list(done.argv), message, output)


def sbatch_failure(done: Completed) -> SchedulerError:
    """The error for an sbatch that exited non-zero. sbatch that answered `sbatch: error:`
    (an invalid partition or option: "Batch job submission failed: Invalid partition name
    specified", recorded in tests/slurm/recorded/sbatch_invalid_partition.txt) created no
    job and would refuse the same script again: SubmissionRefused. A controller that did not
    answer stays SchedulerUnavailable, and anything else stays an unknown outcome (its tag is
    looked up before the attempt is given up)."""
    error = failure(done, "sbatch")
    if isinstance(error, SchedulerUnavailable) or done.returncode <= 0:
        return error
    said = [
        line.strip().removeprefix("sbatch: error:").strip()
        for line in done.stderr.splitlines()
        if line.strip().startswith("sbatch: error:")
    ]
    if not said or any(marker in " ".join(said) for marker in TRANSIENT_REFUSALS):
        return error
    return SubmissionRefused(error.argv, error.message, error.output, why="; ".join(said))


# --- the scheduler --------------------------------------------------------------------------


class SlurmScheduler:
    """SLURM behind the Scheduler Protocol: per call one `sbatch`, or one `squeue` plus at most
    one `sacct`, or one `scancel` per 64 KiB of job ids (anchors 3.7: the cost does not grow
    with the number of jobs)."""

    name = "slurm"
    arrays = True

    def __init__(
        self,
        run: Run = shell.run,
        user: str | None = None,
        submit_timeout: float = SUBMIT_TIMEOUT_S,
        query_timeout: float = QUERY_TIMEOUT_S,
        cancel_timeout: float = CANCEL_TIMEOUT_S,
    ) -> None:
        self._shell_run = run
        self._user = user
        self._submit_timeout = submit_timeout
        self._query_timeout = query_timeout
        self._cancel_timeout = cancel_timeout
        # How many of the user's jobs (of any bundle) the last query saw queued or running:
        # what counts against the site's submit limit (the round's count budget, budget.py).
        self.user_live: int | None = None
        self._early: EarlyQuery[list[SchedulerJob]] | None = None
        self._early_queue: EarlyQuery[Completed] | None = None

    def _run(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        """One SLURM command; a timeout means SLURM did not answer (retry later), a command
        that cannot be started is the scheduler saying no."""
        try:
            return self._shell_run(argv, timeout, cwd=cwd, env=env)
        except CommandTimeout as exc:
            raise SchedulerUnavailable(exc.argv, exc.message, exc.output) from exc
        except CommandError as exc:
            raise SchedulerError(exc.argv, exc.message, exc.output) from exc

    def submit(self, submission: Submission) -> str:
        argv = sbatch_argv(submission)
        name = tags.job_name(submission.tag)
        if not tags.name_fits(name):
            raise SubmissionRefused(
                argv,
                f"the job name {name} is longer than the {tags.NAME_LIMIT} bytes SLURM's "
                "accounting keeps, so the job could not be found again; shorten the job's "
                "(or the array stage's) name",
            )
        # Any error here leaves the outcome unknown (a timed-out sbatch may have created the
        # job, anchors 3.3): the caller looks the tag up before submitting again.
        done = self._run(argv, self._submit_timeout, cwd=submission.workdir)
        if done.returncode != 0:
            raise sbatch_failure(done)
        try:
            return parse_sbatch(done.stdout)
        except ValueError as exc:
            raise SchedulerError(list(done.argv), str(exc), done.stdout + done.stderr) from exc

    def query(
        self,
        tag_prefix: str,
        since: datetime | None,
        *,
        known_ids: Collection[str] = (),
    ) -> list[SchedulerJob]:
        # sacct asks slurmdbd and squeue asks slurmctld: both at once, so that a round waits
        # for the slower of the two, not for their sum. Their order does not matter: `merge`
        # takes squeue's row while it is live, and a job stays in squeue for MinJobAge after
        # it ends, in sacct for good.
        # Leaving the pool waits for sacct, also when squeue failed: its error is the one told.
        sacct = sacct_argv(since, self._user) if since is not None else None
        squeue = squeue_argv()
        early, self._early = self._early, None
        early_queue, self._early_queue = self._early_queue, None
        accounting = early.take(sacct) if early is not None else None
        queued = early_queue.take(squeue) if early_queue is not None else None
        with ThreadPoolExecutor(max_workers=1) as pool:
            if accounting is None and sacct is not None:
                accounting = pool.submit(self._accounting, sacct)
            if queued is not None:
                done = queued.result()
            else:
                done = self._run(squeue, self._query_timeout, env=_query_env())
            if done.returncode != 0:
                raise failure(done, "squeue")
            queue = _parsed(lambda text: read_queue(text, tag_prefix, known_ids), done)
            finished = accounting.result() if accounting is not None else []
        self.user_live = queue.live
        # Another bundle's job in squeue is not ours in sacct either: `merge` would pair the
        # two and `select` drop them (`read_queue`).
        ours = [job for job in finished if job.job_id not in queue.others]
        return select(merge(queue.rows, ours), tag_prefix, known_ids)

    def prefetch(self, since: datetime) -> None:
        """Ask now, in the background, the sacct that `query` asks for `since`: the next
        query takes its answer if it asks the same, soon enough (`early`); any other query
        drops it."""
        if self._early is not None:
            self._early.discard()
        argv = sacct_argv(since, self._user)
        self._early = EarlyQuery(argv, lambda: self._accounting(argv))

    def prefetch_queue(self) -> None:
        """Ask squeue now, in the background, for the next query: a round that holds the
        state lock starts it before it reads the records, so that slurmctld answers while
        they are read (the same answer as asked after them: nothing else changes the
        records while the lock is held). Taken only soon enough (`early`)."""
        if self._early_queue is not None:
            self._early_queue.discard()
        argv = squeue_argv()
        self._early_queue = EarlyQuery(
            argv, lambda: self._run(argv, self._query_timeout, env=_query_env())
        )

    def discard_prefetch(self) -> None:
        """Drop an early sacct or squeue no query has taken (the round ended before it
        asked)."""
        for early in (self._early, self._early_queue):
            if early is not None:
                early.discard()
        self._early = self._early_queue = None

    def _accounting(self, argv: Sequence[str]) -> list[SchedulerJob]:
        done = self._run(argv, self._query_timeout, env=_query_env())
        if done.returncode != 0:
            # sacct asks slurmdbd, not slurmctld, so it may fail while squeue works (or
            # answer while slurmctld is down); either way finished jobs cannot be seen now.
            output = (done.stdout + done.stderr).strip()
            raise SchedulerUnavailable(
                list(done.argv), f"sacct failed (exit {done.returncode})", output
            )
        return _parsed(parse_sacct, done)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        # scancel exits 0 for unknown or finished ids (tests/slurm/recorded/scancel_unknown_job*).
        for argv in scancel_argvs(job_ids):
            done = self._run(argv, self._cancel_timeout)
            if done.returncode != 0:
                raise failure(done, "scancel")

    def exclude(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        if not job_ids or not nodes:
            return
        done = self._run(exclude_argv(job_ids, nodes), self._cancel_timeout)
        if done.returncode != 0:
            raise failure(done, "scontrol update")


def _query_env() -> dict[str, str]:
    return {**os.environ, **QUERY_ENV}


def _parsed(parse: Callable[[str], T], done: Completed) -> T:
    """Rows we cannot read are never guessed at: the round waits, as for a controller that
    did not answer, rather than deciding on a partial view of the queue."""
    try:
        return parse(done.stdout)
    except ValueError as exc:
        raise SchedulerUnavailable(
            list(done.argv), f"{done.argv[0]} printed a row oellm cannot read: {exc}", done.stdout
        ) from exc
