"""The soak's count, from SLURM alone: every submission of a bundle read back from `sacct` and
`squeue` by its tag, then checked for what "never twice" forbids.

Tags and job names follow oellm.reconciler.tags: a tag is `oellm.<key>.<job>.<attempt>`, a
chain link's `<that>.link<k>[.try<n>]`, and an array batch's `oellm.<key>.<group>.array-<digest>`
(each task of the batch carries it); the job name is `<job>.<attempt>...@oellm.<key>`, or the
tag itself for jobs of an oellm before that (both read as the one tag, so a job submitted under
each counts twice). Any key is counted, so a submission made under a key the bundle no longer
uses (a state dir lost after it moved, say) is still counted against its job.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from oellm.reconciler import tags

# Every state a job can have been in, so that `-S/-E` selects each job that existed meanwhile.
SACCT_STATES = "PD,R,CD,F,CA,TO,NF,PR,OOM,BF,DL,RQ,S,RV"
_TASK = re.compile(r"(\d+)_(\d+)")
_FOLDED = re.compile(r"(\d+)_\[([0-9,\-:]+)(?:%\d+)?\]")
LIVE = ("PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING")


@dataclass(frozen=True)
class Row:
    """One SLURM job (or array task) as accounting or the queue shows it."""

    job_id: str  # `123`, or `123_4` for an array task
    name: str
    state: str
    submit: datetime | None
    end: datetime | None  # None while it is live


@dataclass(frozen=True)
class Submission:
    """A row of ours, with what its tag says."""

    row: Row
    key: str
    job: str  # the job it runs (an array task's, from its group and index)
    attempt: int | None  # None for a task of an array batch (its tag names the batch)
    link: int = 1
    tag: str = ""

    @property
    def base(self) -> str:
        """The SLURM job that was submitted: an array task's array job."""
        return self.row.job_id.split("_", 1)[0]


@dataclass(frozen=True)
class Problem:
    text: str
    involved: tuple[Submission, ...]


@dataclass
class Audit:
    submissions: list[Submission] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    duplicates: list[Problem] = field(default_factory=list)
    overlaps: list[Problem] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # array tasks no member of the bundle has


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None  # `Unknown`, `None`


def _expand(job_id: str) -> list[str]:
    """`7_[0-3,5%2]` (tasks that never started, folded) -> 7_0 .. 7_3, 7_5."""
    found = _FOLDED.fullmatch(job_id)
    if not found:
        return [job_id]
    ids: list[str] = []
    for part in found.group(2).split(","):
        first, _, rest = part.partition("-")
        last, _, step = rest.partition(":")
        for index in range(int(first), int(last or first) + 1, int(step or 1)):
            ids.append(f"{found.group(1)}_{index}")
    return ids


def parse_sacct(text: str) -> list[Row]:
    """`sacct -X -P -n --format=JobID,JobName,State,Submit,End` lines."""
    rows: list[Row] = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        job_id, name, state, submit, end = parts[:5]
        state = state.split(" ")[0]  # `CANCELLED by 0`
        for one in _expand(job_id):
            rows.append(Row(one, name, state, _time(submit), _time(end)))
    return rows


def parse_squeue(text: str) -> list[Row]:
    """`squeue -r -h -o %i|%j|%T|%V` lines: the queue, for what accounting lags behind on."""
    rows: list[Row] = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        job_id, name, state, submit = parts[:4]
        for one in _expand(job_id):
            rows.append(Row(one, name, state, _time(submit), None))
    return rows


def read_slurm(since: str) -> list[Row]:
    """Our jobs since `since` (sacct's `-S` format): accounting, then the queue for rows
    accounting has not caught up with yet."""
    env = {**os.environ, "SLURM_BITSTR_LEN": "0"}  # whole task lists, never cut with `...`
    acct = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", since, "-E", "now", "-s", SACCT_STATES]
        + ["--format=JobID,JobName,State,Submit,End"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    queue = subprocess.run(
        ["squeue", "--me", "-r", "-h", "-t", "all", "-o", "%i|%j|%T|%V"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    rows = parse_sacct(acct.stdout)
    known = {row.job_id for row in rows}
    return rows + [row for row in parse_squeue(queue.stdout) if row.job_id not in known]


def classify(
    rows: Iterable[Row], names: set[str], members: Mapping[tuple[str, int], str]
) -> tuple[list[Submission], list[str]]:
    """Our submissions among `rows`: tags naming one of `names` (the jobs of every bundle the
    run compiled) or an array group of `members` ((group, index) -> job). Returns them and the
    array tasks whose index no member has."""
    groups = {group for group, _ in members}
    found: list[Submission] = []
    unmatched: list[str] = []
    for row in rows:
        tag = tags.tag_of(row.name)
        parsed = tags.parse(tag)
        if parsed is None:
            continue
        if parsed.group is not None and parsed.group in groups:
            task = _TASK.fullmatch(row.job_id)
            member = members.get((parsed.group, int(task.group(2)))) if task else None
            if member is None:
                unmatched.append(f"{row.job_id} {row.name}")
                continue
            found.append(Submission(row, parsed.key, member, None, tag=tag))
            continue
        if parsed.job in names and parsed.attempt is not None:
            found.append(Submission(row, parsed.key, parsed.job, parsed.attempt, parsed.link, tag))
    return found, unmatched


def duplicates(subs: Sequence[Submission]) -> list[Problem]:
    """Tags (or attempts, or links, or array tasks) that more than one SLURM job carries."""
    by_tag: dict[str, list[Submission]] = defaultdict(list)
    by_link: dict[tuple[str, int, int], list[Submission]] = defaultdict(list)
    by_task: dict[str, list[Submission]] = defaultdict(list)
    for sub in subs:
        by_tag[sub.tag].append(sub)
        if sub.attempt is not None:
            # Across keys and `.try<n>` retries: one SLURM job per job, attempt and link.
            by_link[(sub.job, sub.attempt, sub.link)].append(sub)
        by_task[sub.row.job_id].append(sub)
    problems: list[Problem] = []
    for tag, group in sorted(by_tag.items()):
        if len({s.base for s in group}) > 1:
            problems.append(Problem(f"tag {tag} is SLURM jobs {_ids(group)}", tuple(group)))
    for (job, attempt, link), group in sorted(by_link.items()):
        tags = {s.tag for s in group}
        if len({s.base for s in group}) > 1 and len(tags) > 1:  # one tag: reported above
            problems.append(
                Problem(
                    f"{job} attempt {attempt} link {link} went to SLURM as {_ids(group)} "
                    f"({', '.join(sorted(tags))})",
                    tuple(group),
                )
            )
    for task, group in sorted(by_task.items()):
        if len(group) > 1:
            problems.append(Problem(f"{task} is listed {len(group)} times", tuple(group)))
    return problems + completed_twice(subs)


def completed_twice(subs: Sequence[Submission]) -> list[Problem]:
    """A job (a chain: one of its links) that ran to COMPLETED more than once. The one check
    that sees an array task run twice under different batch tags (their tags carry no
    attempt), and attempts numbered afresh under another key. Nothing oellm does on purpose
    runs a completed job again: a changed script only reruns jobs still queued or failed."""
    done: dict[tuple[str, int], list[Submission]] = defaultdict(list)
    for sub in subs:
        if sub.row.state == "COMPLETED":
            done[(sub.job, sub.link)].append(sub)
    return [
        Problem(
            f"{job}{f' link {link}' if link > 1 else ''} COMPLETED {len(group)} times: "
            + ", ".join(f"{s.row.job_id} ({s.tag})" for s in group),
            tuple(group),
        )
        for (job, link), group in sorted(done.items())
        if len(group) > 1
    ]


def _ids(group: Iterable[Submission]) -> str:
    return ", ".join(sorted({s.row.job_id for s in group}))


def overlaps(subs: Sequence[Submission], chains: set[str], now: datetime) -> list[Problem]:
    """A job with two submissions live (pending or running) at once: any two, or for a chain
    (whose links wait in the queue together by design) two of different attempts. Times are
    SLURM's, to the second: one that ended in the second the other was submitted is not counted."""
    problems: list[Problem] = []
    by_job: dict[str, list[Submission]] = defaultdict(list)
    for sub in subs:
        if sub.row.submit is not None:
            by_job[sub.job].append(sub)
    for job, group in sorted(by_job.items()):
        group.sort(key=lambda s: (s.row.submit or now, s.row.job_id))
        for i, first in enumerate(group):
            first_end = first.row.end or now
            for second in group[i + 1 :]:
                assert second.row.submit is not None
                if second.row.submit >= first_end:
                    continue
                same = first.attempt is not None and first.attempt == second.attempt
                if job in chains and same:
                    continue
                text = (
                    f"{job}: {first.row.job_id} ({first.tag}, {first.row.state}, "
                    f"{_iso(first.row.submit)}..{_iso(first.row.end)}) and {second.row.job_id} "
                    f"({second.tag}, {second.row.state}, submitted {_iso(second.row.submit)}) "
                    "were live at once"
                )
                problems.append(Problem(text, (first, second)))
    return problems


def _iso(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "-"


def audit(
    rows: Iterable[Row],
    names: set[str],
    members: Mapping[tuple[str, int], str],
    chains: set[str],
    now: datetime,
) -> Audit:
    subs, unmatched = classify(rows, names, members)
    return Audit(
        submissions=subs,
        keys={sub.key for sub in subs},
        duplicates=duplicates(subs),
        overlaps=overlaps(subs, chains, now),
        unmatched=unmatched,
    )
