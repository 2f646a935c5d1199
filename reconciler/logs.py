"""Log events: read only what a watched file gained since the last round (observe calls
`read_new`; `events.matches` matches the lines). Offsets advance only to the end of the last
complete line, so a line written in two pieces is seen once, whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from .model import LogLine

# At most this much of a file is read per round; a huge burst is caught up over rounds.
READ_LIMIT = 8 * 1024 * 1024


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
