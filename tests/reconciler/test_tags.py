"""The tag and job name rule (reconciler/tags.py): names start with the job, read back as exactly
the tag they were made from, names of the previous oellm read as their tags, and nothing else
reads as one of ours."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oellm.compiler.checks import SAFE_NAME
from oellm.reconciler import tags
from oellm.reconciler.errors import SubmissionRefused
from oellm.reconciler.recover import index_tags
from oellm.reconciler.schedulers import Submission
from oellm.reconciler.schedulers.slurm import SlurmScheduler
from oellm.reconciler.schedulers.slurm_parse import parse_sacct, parse_squeue, select
from tests.reconciler.fakes import FakeRun, ok

KEY = "0a1b2c3d"

# Every name the compiler accepts for a job (compiler/checks.py SAFE_NAME).
job_names = st.from_regex(SAFE_NAME, fullmatch=True)


def test_a_job_name_starts_with_the_job_and_ends_with_the_key() -> None:
    assert tags.job_name(tags.attempt_tag(KEY, "pretrain_7b", 1)) == "pretrain_7b.1@oellm.0a1b2c3d"
    link = tags.link_tag(tags.attempt_tag(KEY, "ms_0.001_256", 2), 3, tries=1)
    assert tags.job_name(link) == "ms_0.001_256.2.link3.try2@oellm.0a1b2c3d"
    batch = tags.array_tag(KEY, "train-1", ["t_1:1", "t_0:1"])
    assert tags.job_name(batch).startswith("train-1.array-")
    assert tags.job_name(batch).endswith("@oellm.0a1b2c3d")
    # The batch's digest does not depend on the order of its members.
    assert batch == tags.array_tag(KEY, "train-1", ["t_0:1", "t_1:1"])


@given(
    job=job_names, attempt=st.integers(1, 10**6), link=st.integers(1, 99), tries=st.integers(0, 5)
)
def test_every_name_reads_back_as_its_tag_and_its_parts(
    job: str, attempt: int, link: int, tries: int
) -> None:
    tag = tags.link_tag(tags.attempt_tag(KEY, job, attempt), link, tries)
    name = tags.job_name(tag)
    assert name.startswith(f"{job}.{attempt}")
    assert tags.tag_of(name) == tag
    assert tags.tag_of(tag) == tag, "the previous oellm's name (the tag itself) reads the same"
    assert tags.parse(tag) == tags.Parsed(KEY, job, attempt, link, tries + 1 if link > 1 else 1)
    assert tags.key_of(tag) == KEY


@given(group=job_names, members=st.lists(st.text(min_size=1), min_size=1, max_size=4))
def test_an_array_batch_reads_back_as_its_group(group: str, members: list[str]) -> None:
    tag = tags.array_tag(KEY, group, members)
    assert tags.tag_of(tags.job_name(tag)) == tag
    assert tags.parse(tag) == tags.Parsed(KEY, group=group)


@given(first=job_names, second=job_names, a=st.integers(1, 999), b=st.integers(1, 999))
def test_two_different_submissions_never_share_a_name(
    first: str, second: str, a: int, b: int
) -> None:
    """Job names may contain dots and look like attempts or links (`x.1.link2`): the tags of
    two different jobs, attempts or links are still never one name."""
    one = [tags.link_tag(tags.attempt_tag(KEY, first, a), k) for k in (1, 2)]
    two = [tags.link_tag(tags.attempt_tag(KEY, second, b), k) for k in (1, 2)]
    if (first, a) != (second, b):
        assert not {tags.job_name(t) for t in one} & {tags.job_name(t) for t in two}


def test_names_that_look_like_attempts_or_links_parse_as_the_job_they_name() -> None:
    assert tags.parse(tags.attempt_tag(KEY, "a.1", 2)) == tags.Parsed(KEY, "a.1", 2)
    assert tags.parse(tags.attempt_tag(KEY, "a.1.link2", 3)) == tags.Parsed(KEY, "a.1.link2", 3)
    assert tags.parse(tags.link_tag(tags.attempt_tag(KEY, "a", 1), 2)) == tags.Parsed(
        KEY, "a", 1, 2
    )


@pytest.mark.parametrize(
    "name",
    [
        "allocation",  # sacct's placeholder for a just-ended job
        "pretrain",
        "bash",
        "x@oellm.0A1B2C3D",  # not a key: keys are lowercase hex
        "x@oellm.0a1b2c3",  # 7 digits
        "x@oellm.0a1b2c3d.1",  # something after the key
        "@oellm.0a1b2c3d",  # nothing before it
        "a b@oellm.0a1b2c3d",
        "oellm.rec.fail",  # recorded test names: not a key
    ],
)
def test_other_names_are_left_as_they_are(name: str) -> None:
    assert tags.tag_of(name) == name
    assert tags.job_name(name) == name


def test_a_name_of_the_previous_oellm_and_one_of_this_oellm_read_as_one_tag() -> None:
    old, new = "oellm.0a1b2c3d.st_0.1", "st_0.1@oellm.0a1b2c3d"
    assert tags.tag_of(old) == tags.tag_of(new) == "oellm.0a1b2c3d.st_0.1"
    assert tags.key_of(old) == KEY and tags.key_of(new) is None


def test_squeue_and_sacct_rows_carry_the_tag_of_either_name() -> None:
    """The rows the reconciler decides on are named by tag, whichever oellm named the job, so a
    job queued before an upgrade is found (and, with no record, recovered) by its tag."""
    queue = parse_squeue(
        "5|st_0.1@oellm.0a1b2c3d|RUNNING|None|oellm.0a1b2c3d.st_0.1\n"
        "6|oellm.0a1b2c3d.st_1.1|PENDING|JobHeldUser|oellm.0a1b2c3d.st_1.1\n"
        "7_[0-1]|train.array-0123456789ab@oellm.0a1b2c3d|PENDING|None|(null)\n"
        "8|st_2.1@oellm.ffffffff|RUNNING|None|(null)\n"
        "9|bash|RUNNING|None|(null)\n"
    )
    accounting = parse_sacct(
        "4|st_3.1.link2@oellm.0a1b2c3d|COMPLETED|0:0|2026-11-26T12:00:00|2026-11-26T12:00:05|vm\n"
    )
    rows = select([*queue, *accounting], tags.prefix(KEY))
    assert [(row.job_id, row.name) for row in rows] == [
        ("5", "oellm.0a1b2c3d.st_0.1"),
        ("6", "oellm.0a1b2c3d.st_1.1"),
        ("7_0", "oellm.0a1b2c3d.train.array-0123456789ab"),
        ("7_1", "oellm.0a1b2c3d.train.array-0123456789ab"),
        ("4", "oellm.0a1b2c3d.st_3.1.link2"),
    ]
    found = index_tags(rows, tags.prefix(KEY))
    assert {job: [f.row.job_id for f in fs] for job, fs in found.by_job.items()} == {
        "st_0": ["5"],
        "st_1": ["6"],
        "st_3": ["4"],
    }
    assert found.by_job["st_3"][0].link == 2
    assert sorted(found.by_task) == [("train", 0), ("train", 1)]


def test_the_longest_job_name_the_compiler_takes_fits_what_sacct_keeps() -> None:
    job = "j" * 200
    assert SAFE_NAME.fullmatch(job)
    tag = tags.link_tag(tags.attempt_tag(KEY, job, 999_999), 99, tries=8)
    assert tags.name_fits(tags.job_name(tag)), len(tags.job_name(tag))


def test_a_name_sacct_would_cut_is_refused_before_sbatch(tmp_path: Path) -> None:
    """sacct keeps 255 bytes of a job name: a longer one would lose its key, and the job could
    not be found once squeue forgets it. Such a submission is refused, sbatch never runs."""
    fake = FakeRun({"sbatch": ok("1\n")})
    group = "g" * 230
    submission = Submission(tmp_path / "x.sbatch", tags.array_tag(KEY, group, ["a:1"]), tmp_path)
    with pytest.raises(SubmissionRefused, match="longer than the 255 bytes"):
        SlurmScheduler(run=fake).submit(submission)
    assert fake.calls == []
    fine = Submission(tmp_path / "x.sbatch", tags.array_tag(KEY, "g" * 200, ["a:1"]), tmp_path)
    assert SlurmScheduler(run=fake).submit(fine) == "1"


def test_submissions_are_indexed_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round indexes SLURM's rows by the job their tags name only before it submits an
    attempt it has no record of (`recover.Submissions`); the index is the same either way."""
    from oellm.reconciler import recover
    from oellm.reconciler.schedulers import SchedulerJob

    single = tags.attempt_tag(KEY, "train", 2)
    batch = tags.array_tag(KEY, "grid", ["a:1", "b:1"])
    rows = [
        SchedulerJob("7", single, "RUNNING"),
        SchedulerJob("8_0", batch, "PENDING"),
        SchedulerJob("8_1", batch, "PENDING"),
        SchedulerJob("9", tags.attempt_tag("ffffffff", "train", 1), "RUNNING"),
    ]
    parsed: list[str] = []
    real_parse = tags.parse

    def parse(tag: str) -> tags.Parsed | None:
        parsed.append(tag)
        return real_parse(tag)

    monkeypatch.setattr(recover.tags, "parse", parse)
    found = recover.index_tags(rows, tags.prefix(KEY))
    assert parsed == []
    (train,) = found.of("train", None, None)
    assert (train.row.job_id, train.attempt, train.tag) == ("7", 2, single)
    (task,) = found.of("b", "grid", 1)
    assert (task.row.job_id, task.attempt, task.tag) == ("8_1", None, tags.member_tag(batch, 1))
    assert found.of("other", None, None) == ()
    assert len(parsed) == 3, "each row of ours parsed once, the other key's not at all"
    assert found == recover.index_tags(list(rows), tags.prefix(KEY))
    assert found != recover.NOTHING and recover.index_tags([], "x") == recover.NOTHING
