"""The SLURM scheduler: pure argv builders, pure parsers of `sbatch`/`squeue`/`sacct` output into
`SchedulerJob` rows, and `SlurmScheduler`, which joins them through the one door to the shell
(`oellm.shell`). Facts cited as "anchors 3.x" are in shared/reference/anchors.md; recorded
outputs are in tests/slurm/recorded.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar, get_args

from oellm import shell
from oellm.errors import CommandError, CommandTimeout
from oellm.reconciler import tags
from oellm.reconciler.arrays import expand_task_ids
from oellm.reconciler.errors import SchedulerError, SchedulerUnavailable, SubmissionRefused
from oellm.reconciler.schedulers import FINISHED, JobState, SchedulerJob, Submission
from oellm.reconciler.schedulers.early import EarlyQuery
from oellm.shell import Completed

SUBMIT_TIMEOUT_S = 60.0  # sbatch alone retries ~9 s when slurmctld is down; a busy one is slower
QUERY_TIMEOUT_S = 30.0
CANCEL_TIMEOUT_S = 30.0
# Bytes of job ids per scancel command line: far below any system's ARG_MAX.
SCANCEL_ARGV_BYTES = 64 * 1024

SQUEUE_FORMAT = "%i|%j|%T|%r|%k"
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Start", "End", "NodeList")
# Every state sacct 22.05 accepts for -s (others, e.g. CF, are "not supported / accounted").
# With -s, sacct lists jobs that were in one of these states during -S..-E, which is what makes
# jobs cancelled while pending appear at all (tests/slurm/recorded/sacct_finished*.txt).
SACCT_STATES = "BF,CA,CD,DL,F,NF,OOM,PD,PR,R,RQ,RS,RV,S,TO"
# slurmdbd first stores this placeholder JobName for a job that ended within about a second of
# its submission; the real name follows 2-5 s later (SLURM 22.05.8, tests/slurm/test_cluster.py).
ALLOCATION_PLACEHOLDER = "allocation"
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
_STATES: dict[str, JobState] = {state: state for state in get_args(JobState)}
_JOB_ID = re.compile(r"\d+")
# Values sacct/squeue print for "no value".
_EMPTY = frozenset({"", "None", "Unknown", "None assigned", "(null)"})
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


# --- parsers (pure) -------------------------------------------------------------------------


def parse_sbatch(stdout: str) -> str:
    """The job id from `sbatch --parsable`: `id` or `id;cluster`. Raises ValueError otherwise."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if lines:
        job_id = lines[-1].split(";", 1)[0]
        if _JOB_ID.fullmatch(job_id):
            return job_id
    raise ValueError(f"no job id in sbatch output {stdout!r}")


def split_squeue_line(line: str) -> tuple[str, str, str, str | None, str | None]:
    """(id, name, state, reason, comment) from one `%i|%j|%T|%r|%k` line. The comment is free
    text and may contain `|`, so split at most 4 times; `(null)` (no comment) and reason `None`
    (nothing to wait for) become None."""
    parts = line.split("|", 4)
    if len(parts) != 5:
        raise ValueError(f"squeue line has {len(parts)} of 5 fields: {line!r}")
    job_id, name, state, reason, comment = parts
    return job_id, name, state, _value(reason), _value(comment)


def parse_squeue(text: str) -> list[SchedulerJob]:
    """One row per job, named by the tag its job name carries (`tags.tag_of`); the tasks of an
    array that squeue folds into one row (`7_[2-3%2]`, pending ones) get one row each."""
    return read_queue(text, "").rows


@dataclass(frozen=True)
class Queue:
    """squeue's answer as one bundle's query needs it (`read_queue`)."""

    rows: list[SchedulerJob]  # the rows `select` could keep
    others: set[str]  # the ids of the other rows: jobs of other bundles (or of no bundle)
    live: int  # how many of all the listed jobs are queued or running


def read_queue(text: str, tag_prefix: str, known_ids: Collection[str] = ()) -> Queue:
    """`parse_squeue` of only the rows whose tag starts with `tag_prefix` or whose job (or
    array job) id is in `known_ids`: the others, which `select` would drop, are not made, only
    counted (in `live`, as a site's submit limit counts them) and their ids kept (`others`:
    their accounting rows are not ours either). Most of a user's squeue may be other sweeps:
    10,000 array tasks folded into ten rows are 10,000 rows once made."""
    known = set(known_ids)
    rows: list[SchedulerJob] = []
    others: set[str] = set()
    live = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        folded, name, raw_state, reason, _comment = split_squeue_line(line)
        ids = expand_task_ids(folded)
        state = job_state(raw_state)
        if state not in FINISHED:
            live += len(ids)
        tag = tags.tag_of(name)
        # `_is_known` of each id: the tasks of one row share their array job id.
        array_job = folded.split("_", 1)[0]
        if not tag.startswith(tag_prefix) and array_job not in known and known.isdisjoint(ids):
            others.update(ids)
            continue
        rows.extend(
            SchedulerJob(
                job_id=job_id,
                name=tag,
                state=state,
                raw_state=raw_state,
                reason=reason,
                source="queue",
            )
            for job_id in ids
        )
    return Queue(rows, others, live)


def parse_sacct(text: str) -> list[SchedulerJob]:
    """Rows of `sacct -P` with SACCT_FIELDS, named like squeue's rows. A job name is the only
    free text: take the id from the left and the five fixed fields from the right, so a `|` in
    a name cannot shift them.
    Array tasks that never started come folded (`7_[0,2,5]`, tests/slurm/recorded): one row
    each."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        head = line.split("|", 1)
        tail = head[1].rsplit("|", 5) if len(head) == 2 else []
        if len(tail) != 6:
            raise ValueError(f"sacct line has too few fields: {line!r}")
        name, raw_state, exit_code, start, end, nodes = tail
        code, signal = parse_exit_code(exit_code)
        for job_id in expand_task_ids(head[0]):
            jobs.append(
                SchedulerJob(
                    job_id=job_id,
                    name=tags.tag_of(name),
                    state=job_state(raw_state),
                    raw_state=raw_state,
                    exit_code=code,
                    signal=signal,
                    start=_value(start),
                    end=_value(end),
                    nodes=_value(nodes),
                    source="accounting",
                )
            )
    return jobs


def job_state(raw: str) -> JobState:
    """The base state: sacct prints `CANCELLED by <uid>` (anchors 3.1); anything we do not know
    (SPECIAL_EXIT, REQUEUE_HOLD, STOPPED, ...) is OTHER, with the text kept in raw_state."""
    return _STATES.get(raw.split(" ", 1)[0], "OTHER")


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """`3:0` -> (3, 0): the exit status and the signal that ended the job (`0:53`: no status,
    signal 53, e.g. an --output folder that does not exist)."""
    code, _, signal = text.partition(":")
    return _int(code), _int(signal)


# --- selecting and merging (pure) -----------------------------------------------------------


def merge(queue: Sequence[SchedulerJob], accounting: Sequence[SchedulerJob]) -> list[SchedulerJob]:
    """One row per job id: a squeue row whose job is not finished is the freshest; otherwise
    sacct's row, which has exit code, times and nodes; a squeue row alone is kept as is. Order:
    squeue's rows, then jobs only sacct knows (it forgets nothing, squeue does after MinJobAge)."""
    acct = {job.job_id: job for job in accounting}
    merged = []
    for job in queue:
        other = acct.pop(job.job_id, None)
        if other is None or job.state not in FINISHED:
            merged.append(job)
        elif other.state not in FINISHED:
            # slurmdbd lags slurmctld: never step back from squeue's end state to sacct's
            # RUNNING; the exit code comes with a later query.
            merged.append(job)
        else:
            # squeue has the real name while sacct may still show the placeholder.
            merged.append(replace(other, name=job.name))
    merged.extend(acct.values())
    return merged


def select(
    jobs: Iterable[SchedulerJob], tag_prefix: str, known_ids: Collection[str] = ()
) -> list[SchedulerJob]:
    """Jobs whose name starts with `tag_prefix`, plus jobs whose id the caller already knows.

    Matching by name alone misses a job for the few seconds sacct calls it "allocation" (see
    ALLOCATION_PLACEHOLDER) once squeue has forgotten it: the caller must also match by the job
    ids it recorded, passed as `known_ids`. An array job id `7` also covers its tasks `7_1`,
    `7_[2-3]`. Placeholder rows are never matched by prefix, whatever the prefix.
    """
    known = set(known_ids)
    return [job for job in jobs if _is_known(job.job_id, known) or _matches(job, tag_prefix)]


def _is_known(job_id: str, known: set[str]) -> bool:
    return job_id in known or job_id.split("_", 1)[0] in known


def _matches(job: SchedulerJob, tag_prefix: str) -> bool:
    if job.source == "accounting" and job.name == ALLOCATION_PLACEHOLDER:
        return False
    return job.name.startswith(tag_prefix)


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


def _value(text: str) -> str | None:
    return None if text.strip() in _EMPTY else text


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
