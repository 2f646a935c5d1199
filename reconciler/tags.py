"""Tags and SLURM job names: the one rule by which oellm marks its submissions and finds them.

A tag names one submission of one bundle (identity.py makes the 8-hex `key`):

    oellm.<key>.<job>.<attempt>                    an attempt (and the first link of a chain)
    oellm.<key>.<job>.<attempt>.link<k>[.try<n>]   link k of a chain, a retried link submission
    oellm.<key>.<group>.array-<digest>             one `sbatch --array` batch of an array group
    <batch tag>[<index>]                           what an array member's record holds

Records, status and lookups use tags. SLURM's job name says the same words with the job first,
`<job>.<attempt>[...]@oellm.<key>`, because squeue shows the start of a name (8 characters by
default, `%.40j` 40): `pretrain.1@oellm.6b3f09a2` reads `pretrain` where the tag read `oellm.6b`.
The rule is a bijection for tags: the name is the tag's rest, `@`, then `oellm.<key>`; `@` is
in no job name (the compiler allows `[A-Za-z0-9][A-Za-z0-9_.+-]*`) nor array group name (the
stage with every other character made `_`), and the key is a fixed 8 hex digits at the very end.

The previous oellm named jobs by the tag itself (`oellm.<key>.<job>.<attempt>`); such a name
still reads as that tag, so jobs submitted before an upgrade are found and adopted, never
submitted again. Pure: no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

MARK = "oellm"
KEY = re.compile(r"[0-9a-f]{8}")
# slurmdbd stores JobName as `tinytext`: sacct shows only its first 255 bytes (a 305-byte name
# came back as 255 from the local SLURM 22.05; squeue shows it whole). A longer name would lose
# its key, and the job would no longer be found once squeue forgets it.
NAME_LIMIT = 255

_TAG = re.compile(rf"{MARK}\.(?P<key>[0-9a-f]{{8}})\.(?P<rest>[^@\s]+)")
_NAME = re.compile(rf"(?P<rest>[^@\s]+)@{MARK}\.(?P<key>[0-9a-f]{{8}})")
# The last segments of a link's tag are never all digits, so no link of one job can read as
# an attempt of another, even when job names contain dots.
_ATTEMPT = re.compile(
    r"(?P<job>.+)\.(?P<attempt>\d+)(?:\.link(?P<link>\d+)(?:\.try(?P<try>\d+))?)?"
)
_BATCH = re.compile(r"(?P<group>.+)\.array-(?P<digest>[0-9a-f]{12})")


def prefix(key: str) -> str:
    """What every tag of one key starts with."""
    return f"{MARK}.{key}."


def attempt_tag(key: str, job: str, attempt: int) -> str:
    return f"{prefix(key)}{job}.{attempt}"


def link_tag(attempt_tag: str, link: int, tries: int = 0) -> str:
    """The tag of a link: link 1 carries the attempt's own tag (so the attempt's intent
    protocol covers it), later ones `<attempt tag>.link<k>`, and a retried submission
    `.link<k>.try<n>`."""
    if link == 1:
        return attempt_tag
    return f"{attempt_tag}.link{link}" + (f".try{tries + 1}" if tries else "")


def array_tag(key: str, group: str, attempts: Iterable[str]) -> str:
    """The tag of one array batch: its digest names the member attempts (`job:attempt`), so
    two batches of one group never share a tag."""
    digest = hashlib.sha256("\n".join(sorted(attempts)).encode()).hexdigest()[:12]
    return f"{prefix(key)}{group}.array-{digest}"


def member_tag(tag: str, index: int) -> str:
    """The tag an array member's record is found by: task `index` of the array tagged `tag`
    (every task of an array carries the array's one name)."""
    return f"{tag}[{index}]"


def job_name(tag: str) -> str:
    """The SLURM job name of a tag: `<rest>@oellm.<key>`. Anything that is not a tag is its
    own name."""
    found = _TAG.fullmatch(tag)
    return f"{found['rest']}@{MARK}.{found['key']}" if found else tag


# Cached: a round reads every row SLURM lists, and the 10,000 tasks of ten arrays carry ten
# names between them.
@functools.lru_cache(maxsize=1 << 14)
def tag_of(name: str) -> str:
    """The tag a SLURM job name carries: a name of this oellm (`<rest>@oellm.<key>`) or of the
    previous one (the tag itself); any other name is returned as it is."""
    found = _NAME.fullmatch(name)
    return f"{prefix(found['key'])}{found['rest']}" if found else name


def key_of(tag: str) -> str | None:
    """The key of a tag, None for anything else."""
    found = _TAG.fullmatch(tag)
    return found["key"] if found else None


def name_fits(name: str) -> bool:
    return len(name.encode("utf-8")) <= NAME_LIMIT


@dataclass(frozen=True)
class Parsed:
    """What a tag says: an attempt (or a link of one), or an array batch (`group` set)."""

    key: str
    job: str | None = None  # None for an array batch
    attempt: int | None = None
    link: int = 1
    tries: int = 1
    group: str | None = None  # the array group of a batch


@functools.lru_cache(maxsize=1 << 14)
def parse(tag: str) -> Parsed | None:
    """The parts of a tag, None for anything that is not one."""
    found = _TAG.fullmatch(tag)
    if not found:
        return None
    key, rest = found["key"], found["rest"]
    batch = _BATCH.fullmatch(rest)
    if batch:
        return Parsed(key, group=batch["group"])
    one = _ATTEMPT.fullmatch(rest)
    if not one:
        return None
    link, tries = int(one["link"] or 1), int(one["try"] or 1)
    return Parsed(key, one["job"], int(one["attempt"]), link, tries)
