"""Unified diffs: applying one to the old text gives the new text, and big lockfiles stay fast."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from oellm.compiler.textdiff import unified

HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply(old: list[str], diff: str) -> list[str]:
    """A minimal `patch`: checks every context and removed line against the old text."""
    lines = diff.split("\n")[:-1]
    assert lines[0].startswith("--- ") and lines[1].startswith("+++ ")
    out: list[str] = []
    pos = 0
    for line in lines[2:]:
        header = HUNK.fullmatch(line)
        if header:
            start, length = int(header[1]), int(header[2] or 1)
            target = start if length == 0 else start - 1
            assert target >= pos
            out += old[pos:target]
            pos = target
        elif line[0] == "+":
            out.append(line[1:])
        else:
            assert line[0] in " -" and old[pos] == line[1:], (line, old[pos])
            if line[0] == " ":
                out.append(old[pos])
            pos += 1
    return out + old[pos:]


def text(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


# A small alphabet, so that lines repeat, as a lockfile's lines do.
LINES = st.lists(st.sampled_from(["a", "b", "c", "d", "}", "  x: 1", ""]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(LINES, LINES)
def test_applying_the_diff_gives_the_new_text(old: list[str], new: list[str]) -> None:
    diff = unified(text(old), text(new), "f", "f")
    if old == new:
        assert diff == ""
    else:
        assert apply(old, diff) == new


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=60), st.data())
def test_unique_lines_anchor_the_diff(numbers: list[int], data: st.DataObject) -> None:
    old = [f"name {n}" if n % 3 else "same" for n in numbers]
    new = list(old)
    for _ in range(data.draw(st.integers(0, 5))):
        if new:
            new[data.draw(st.integers(0, len(new) - 1))] = data.draw(st.sampled_from(["same", "z"]))
    diff = unified(text(old), text(new), "f", "f")
    assert (diff == "") == (old == new)
    if diff:
        assert apply(old, diff) == new


def test_a_big_lockfile_with_repeated_lines() -> None:
    # Its speed is measured by benchmarks, not asserted here; this checks the result.
    def lock(steps: int) -> bytes:
        jobs = [{"name": f"j_{i}", "index": i, "params": {"steps": steps}} for i in range(5000)]
        return (json.dumps({"jobs": jobs}, indent=2) + "\n").encode()

    old, new = lock(100), lock(200)
    diff = unified(old, new, "plan.lock.json", "plan.lock.json")
    assert diff.count('\n-        "steps": 100\n') == 5000
    assert apply(old.decode().split("\n")[:-1], diff) == new.decode().split("\n")[:-1]
