"""The soak's count (benchmarks/soak_audit.py) on sacct output written out by hand: each check
must find the duplicate it is there for, and nothing in a clean run."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime
from typing import Any

from oellm.reconciler import tags
from tests.helpers import REPO


def _load() -> Any:
    spec = importlib.util.spec_from_file_location(
        "soak_audit", REPO / "benchmarks" / "soak_audit.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_audit"] = module
    spec.loader.exec_module(module)
    return module


audit_module: Any = _load()
NAMES = {"st_0", "dc_0", "ch_0", "fl_0", "ar_0", "ar_1"}
MEMBERS = {("ar", 0): "ar_0", ("ar", 1): "ar_1"}
CHAINS = {"ch_0"}
NOW = datetime(2026, 1, 1, 13, 0, 0)


def audit(sacct: str, squeue: str = "") -> Any:
    rows = audit_module.parse_sacct(sacct) + audit_module.parse_squeue(squeue)
    return audit_module.audit(rows, NAMES, MEMBERS, CHAINS, NOW)


def texts(problems: list[Any]) -> list[str]:
    return [p.text for p in problems]


# A clean run: two stages, a chain of two links queued together, an array batch of two tasks
# plus one task restarted alone under its job's tag, a job that failed once, another
# bundle's job of the same name, and a job that ended in the second the next was submitted.
CLEAN = """\
10|oellm.aaaa1111.st_0.1|COMPLETED|2026-01-01T12:00:00|2026-01-01T12:00:05
11|oellm.aaaa1111.dc_0.1|COMPLETED|2026-01-01T12:00:06|2026-01-01T12:00:09
12|oellm.aaaa1111.ch_0.1|COMPLETED|2026-01-01T12:00:00|2026-01-01T12:00:02
13|oellm.aaaa1111.ch_0.1.link2|COMPLETED|2026-01-01T12:00:00|2026-01-01T12:00:04
14_0|oellm.aaaa1111.ar.array-0123456789ab|COMPLETED|2026-01-01T12:00:00|2026-01-01T12:00:03
14_1|oellm.aaaa1111.ar.array-0123456789ab|FAILED|2026-01-01T12:00:00|2026-01-01T12:00:03
15_1|oellm.aaaa1111.ar_1.2|COMPLETED|2026-01-01T12:00:04|2026-01-01T12:00:06
16|oellm.aaaa1111.fl_0.1|FAILED|2026-01-01T12:00:00|2026-01-01T12:00:01
17|oellm.aaaa1111.fl_0.2|COMPLETED|2026-01-01T12:00:01|2026-01-01T12:00:03
18|oellm.bbbb2222.other.1|COMPLETED|2026-01-01T12:00:00|2026-01-01T12:00:03
19|allocation|COMPLETED|2026-01-01T12:00:00|2026-01-01T12:00:03
"""


def test_a_clean_run_has_no_finding() -> None:
    found = audit(CLEAN)
    assert len(found.submissions) == 9
    assert found.keys == {"aaaa1111"}
    assert found.duplicates == found.overlaps == found.unmatched == []


def renamed(sacct: str) -> str:
    """The same rows as this oellm names the jobs (job first, tags.job_name)."""
    lines = []
    for line in sacct.splitlines():
        job_id, name, rest = line.split("|", 2)
        lines.append(f"{job_id}|{tags.job_name(name)}|{rest}\n")
    return "".join(lines)


def test_a_clean_run_under_todays_names_counts_the_same() -> None:
    assert "st_0.1@oellm.aaaa1111" in renamed(CLEAN)
    found = audit(renamed(CLEAN))
    assert sorted(s.tag for s in found.submissions) == sorted(
        s.tag for s in audit(CLEAN).submissions
    )
    assert found.keys == {"aaaa1111"}
    assert found.duplicates == found.overlaps == found.unmatched == []


def test_one_tag_under_the_old_name_and_the_new_one_is_a_duplicate() -> None:
    """A job queued by the previous oellm and submitted again after the upgrade."""
    found = audit(CLEAN, squeue="20|st_0.1@oellm.aaaa1111|PENDING|2026-01-01T12:00:10\n")
    assert texts(found.duplicates) == ["tag oellm.aaaa1111.st_0.1 is SLURM jobs 10, 20"]


def test_a_tag_on_two_slurm_jobs_is_a_duplicate() -> None:
    found = audit(CLEAN + "20|oellm.aaaa1111.st_0.1|PENDING|2026-01-01T12:00:10|Unknown\n")
    assert texts(found.duplicates) == ["tag oellm.aaaa1111.st_0.1 is SLURM jobs 10, 20"]


def test_the_same_attempt_under_another_key_is_a_duplicate_and_ran_twice() -> None:
    found = audit(
        CLEAN + "20|oellm.cccc3333.st_0.1|COMPLETED|2026-01-01T12:01:00|2026-01-01T12:01:05\n"
    )
    assert texts(found.duplicates) == [
        "st_0 attempt 1 link 1 went to SLURM as 10, 20 "
        "(oellm.aaaa1111.st_0.1, oellm.cccc3333.st_0.1)",
        "st_0 COMPLETED 2 times: 10 (oellm.aaaa1111.st_0.1), 20 (oellm.cccc3333.st_0.1)",
    ]


def test_a_link_retried_although_it_reached_slurm_is_a_duplicate() -> None:
    found = audit(
        CLEAN + "20|oellm.aaaa1111.ch_0.1.link2.try1|CANCELLED|2026-01-01T12:00:01|"
        "2026-01-01T12:00:02\n"
    )
    assert texts(found.duplicates) == [
        "ch_0 attempt 1 link 2 went to SLURM as 13, 20 "
        "(oellm.aaaa1111.ch_0.1.link2, oellm.aaaa1111.ch_0.1.link2.try1)"
    ]


def test_an_array_task_run_again_in_another_batch_is_found() -> None:
    # Pending tasks fold into one sacct row; both of this batch's tasks are ours again.
    found = audit(CLEAN + "30_[0-1]|oellm.aaaa1111.ar.array-ffffffffffff|CANCELLED by 0|"
                  "2026-01-01T12:00:04|2026-01-01T12:00:05\n")  # fmt: skip
    assert texts(found.duplicates) == []
    assert texts(found.overlaps) == [
        "ar_1: 15_1 (oellm.aaaa1111.ar_1.2, COMPLETED, 2026-01-01T12:00:04..2026-01-01T12:00:06) "
        "and 30_1 (oellm.aaaa1111.ar.array-ffffffffffff, CANCELLED, submitted "
        "2026-01-01T12:00:04) were live at once"
    ]
    ran = audit(CLEAN + "31_0|oellm.aaaa1111.ar.array-eeeeeeeeeeee|COMPLETED|"
                "2026-01-01T12:00:07|2026-01-01T12:00:09\n")  # fmt: skip
    assert texts(ran.duplicates) == [
        "ar_0 COMPLETED 2 times: 14_0 (oellm.aaaa1111.ar.array-0123456789ab), "
        "31_0 (oellm.aaaa1111.ar.array-eeeeeeeeeeee)"
    ]


def test_two_attempts_live_at_once_overlap_but_a_chain_s_links_do_not() -> None:
    found = audit(
        CLEAN,
        squeue="40|oellm.aaaa1111.fl_0.3|PENDING|2026-01-01T12:00:02\n"
        "41|oellm.aaaa1111.ch_0.2|PENDING|2026-01-01T12:00:03\n",
    )
    assert texts(found.overlaps) == [
        "ch_0: 13 (oellm.aaaa1111.ch_0.1.link2, COMPLETED, "
        "2026-01-01T12:00:00..2026-01-01T12:00:04) and 41 (oellm.aaaa1111.ch_0.2, PENDING, "
        "submitted 2026-01-01T12:00:03) were live at once",
        "fl_0: 17 (oellm.aaaa1111.fl_0.2, COMPLETED, 2026-01-01T12:00:01..2026-01-01T12:00:03) "
        "and 40 (oellm.aaaa1111.fl_0.3, PENDING, submitted 2026-01-01T12:00:02) were live at once",
    ]


def test_an_array_task_no_member_has_is_reported() -> None:
    found = audit(CLEAN + "50_7|oellm.aaaa1111.ar.array-0123456789ab|COMPLETED|"
                  "2026-01-01T12:00:00|2026-01-01T12:00:03\n")  # fmt: skip
    assert found.unmatched == ["50_7 oellm.aaaa1111.ar.array-0123456789ab"]
