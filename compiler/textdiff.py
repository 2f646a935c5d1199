"""Unified diffs of bundle files, fast on big ones.

difflib alone is quadratic on a lockfile of thousands of jobs whose lines repeat (`"steps": 100`
once per job): minutes for 10,000 jobs. Lines that occur once in each file (a job's name, its
index) are matched first, as patience diff does, and difflib only aligns the short gaps between
them.
"""

from __future__ import annotations

import bisect
import difflib
from collections.abc import Iterator, Sequence

# Above this many line pairs a gap without anchors is shown as replaced, not aligned.
_GAP_LIMIT = 4_000_000

Block = tuple[int, int, int]  # a[i:i+n] == b[j:j+n]


def unified(old: bytes | None, new: bytes | None, old_name: str, new_name: str) -> str:
    """A unified diff (`git diff` labels, /dev/null for a missing side), '' when equal."""
    if old == new:
        return ""
    from_label = "/dev/null" if old is None else f"a/{old_name}"
    to_label = "/dev/null" if new is None else f"b/{new_name}"
    try:
        before = [] if old is None else lines(old.decode("utf-8"))
        after = [] if new is None else lines(new.decode("utf-8"))
    except UnicodeDecodeError:
        return f"Binary files {from_label} and {to_label} differ\n"
    return "".join(_hunks(before, after, from_label, to_label, context=3))


def lines(text: str) -> list[str]:
    """Split on newlines only (str.splitlines also splits on \\r, \\f and more, which a script
    may hold inside a quoted value), marking a missing final newline the way `diff` does."""
    *body, last = text.split("\n")
    found = [line + "\n" for line in body]
    if last:
        found.append(last + "\n\\ No newline at end of file\n")
    return found


class _AnchoredMatcher(difflib.SequenceMatcher[str]):
    """difflib's grouping into hunks, over matches found by `matching_blocks`."""

    def __init__(self, a: Sequence[str], b: Sequence[str]) -> None:
        self.old, self.new = a, b
        super().__init__(None, a, b, autojunk=False)

    def get_matching_blocks(self) -> list[difflib.Match]:
        blocks = _merge(matching_blocks(self.old, self.new))
        blocks.append((len(self.old), len(self.new), 0))
        return [difflib.Match(i, j, n) for i, j, n in blocks]


def _hunks(
    a: list[str], b: list[str], from_label: str, to_label: str, context: int
) -> Iterator[str]:
    groups = _AnchoredMatcher(a, b).get_grouped_opcodes(context)
    for number, group in enumerate(groups):
        if number == 0:
            yield f"--- {from_label}\n+++ {to_label}\n"
        first, last = group[0], group[-1]
        yield f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in a[i1:i2])
                continue
            yield from ("-" + line for line in a[i1:i2])
            yield from ("+" + line for line in b[j1:j2])


def _range(start: int, stop: int) -> str:
    # The unified format counts lines from 1; an empty range names the line before it.
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def matching_blocks(a: Sequence[str], b: Sequence[str]) -> list[Block]:
    """Matching runs of lines, in order: common ends, then lines unique to both sides as
    anchors, then difflib inside each gap that has no anchor left."""
    found: list[Block] = []
    todo = [(0, len(a), 0, len(b))]
    while todo:
        alo, ahi, blo, bhi = todo.pop()
        while alo < ahi and blo < bhi and a[alo] == b[blo]:
            found.append((alo, blo, 1))
            alo, blo = alo + 1, blo + 1
        while alo < ahi and blo < bhi and a[ahi - 1] == b[bhi - 1]:
            ahi, bhi = ahi - 1, bhi - 1
            found.append((ahi, bhi, 1))
        if alo == ahi or blo == bhi:
            continue
        anchors = _anchors(a, b, alo, ahi, blo, bhi)
        if not anchors:
            if (ahi - alo) * (bhi - blo) <= _GAP_LIMIT:
                matcher = difflib.SequenceMatcher(None, a[alo:ahi], b[blo:bhi], autojunk=False)
                found += [(alo + i, blo + j, n) for i, j, n in matcher.get_matching_blocks() if n]
            continue
        for i, j in anchors:
            found.append((i, j, 1))
            todo.append((alo, i, blo, j))
            alo, blo = i + 1, j + 1
        todo.append((alo, ahi, blo, bhi))
    return sorted(found)


def _anchors(
    a: Sequence[str], b: Sequence[str], alo: int, ahi: int, blo: int, bhi: int
) -> list[tuple[int, int]]:
    """Lines that occur once in a[alo:ahi] and once in b[blo:bhi], the longest run of them
    in the same order on both sides."""
    count: dict[str, int] = {}
    for line in a[alo:ahi]:
        count[line] = count.get(line, 0) + 1
    in_b: dict[str, int] = {}
    for j in range(blo, bhi):
        line = b[j]
        if count.get(line) == 1:
            in_b[line] = -1 if line in in_b else j
    pairs = [(i, in_b[a[i]]) for i in range(alo, ahi) if in_b.get(a[i], -1) >= 0]
    # Longest increasing subsequence of the b positions (pairs are in a order).
    tails: list[int] = []  # tails[k]: index into pairs of the smallest tail of a run of k+1
    tail_js: list[int] = []  # the b position of each tail, for bisect
    before: list[int] = []
    for index, (_, j) in enumerate(pairs):
        k = bisect.bisect_left(tail_js, j)
        before.append(tails[k - 1] if k else -1)
        if k == len(tails):
            tails.append(index)
            tail_js.append(j)
        else:
            tails[k] = index
            tail_js[k] = j
    run: list[tuple[int, int]] = []
    index = tails[-1] if tails else -1
    while index >= 0:
        run.append(pairs[index])
        index = before[index]
    return run[::-1]


def _merge(blocks: list[Block]) -> list[Block]:
    merged: list[Block] = []
    for i, j, n in blocks:
        if merged and merged[-1][0] + merged[-1][2] == i and merged[-1][1] + merged[-1][2] == j:
            merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + n)
        else:
            merged.append((i, j, n))
    return merged
