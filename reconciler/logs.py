"""Log events: read only what a watched file gained since the last round, and match it.

Reading is I/O (observe calls `read_new`); matching is pure (decide calls `matches`). Offsets
advance only to the end of the last complete line, so a line written in two pieces is seen
once, whole. Each match is keyed by attempt, file and byte offset (and link, in a chain):
re-reading after a crash finds the same keys and fires nothing twice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# At most this much of a file is read per round; a huge burst is caught up over rounds.
READ_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True)
class LogLine:
    file: str
    offset: int
    text: str
    link: int = 0  # the chain link whose log this is (0: not a chain)


@dataclass(frozen=True)
class LogRead:
    """What one round read of an attempt's watched files."""

    lines: tuple[LogLine, ...]
    offsets: Mapping[str, int]  # where the next round starts, per file
    size: int | None  # size of the main log, for inactivity


def read_new(
    path: Path, offset: int, limit: int = READ_LIMIT, link: int = 0
) -> tuple[list[LogLine], int]:
    """Complete lines after `offset`, and the offset after the last of them."""
    try:
        with open(path, "rb") as handle:
            # Shorter than what was read: the file was truncated and written anew (the next
            # link of a chain that shares one log file); read it from its start.
            if os.fstat(handle.fileno()).st_size < offset:
                offset = 0
            handle.seek(offset)
            chunk = handle.read(limit)
    except OSError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    lines: list[LogLine] = []
    position = offset
    for raw in chunk[: end + 1].split(b"\n")[:-1]:
        lines.append(LogLine(str(path), position, raw.decode("utf-8", errors="replace"), link))
        position += len(raw) + 1
    return lines, offset + end + 1


@dataclass(frozen=True)
class Match:
    event: Mapping[str, Any]
    line: LogLine
    groups: tuple[str, ...]
    named: Mapping[str, str]

    @property
    def key(self) -> str:
        # Later links of a chain may write the same file again (a log path without %j).
        link = f"#link{self.line.link}" if self.line.link > 1 else ""
        return f"{self.event['name']}@{self.line.file}:{self.line.offset}{link}"


def matches(events: Sequence[Mapping[str, Any]], lines: Sequence[LogLine]) -> Iterator[Match]:
    """Every (event, line) pair that matches, in file order, events in config order."""
    for line in lines:
        for event in events:
            kind = event["kind"]
            if kind == "substring" and event["pattern"] in line.text:
                yield Match(event, line, (event["pattern"],), {})
            elif kind == "regex":
                found = _compiled(event["pattern"]).search(line.text)
                if found:
                    groups = (found.group(0), *(g or "" for g in found.groups()))
                    named = {k: v or "" for k, v in found.groupdict().items()}
                    yield Match(event, line, groups, named)


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _CACHE.get(pattern)
    if found is None:
        found = _CACHE[pattern] = re.compile(pattern)
    return found
