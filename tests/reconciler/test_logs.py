"""Reading only what a log gained since the last round, and the keys that make an event fire
once: per file and offset, and per link when the links of a chain write one file."""

from __future__ import annotations

from pathlib import Path

from oellm.reconciler.events import matches
from oellm.reconciler.logs import read_new
from oellm.reconciler.model import LogLine

EVENT = {"name": "done", "kind": "substring", "pattern": "done", "actions": []}


def test_only_complete_new_lines_are_read(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"one\ntw")
    lines, offset = read_new(log, 0)
    assert [(x.offset, x.text) for x in lines] == [(0, "one")] and offset == 4
    log.write_bytes(b"one\ntwo\n")
    lines, offset = read_new(log, offset, link=2)
    assert lines == [LogLine(str(log), 4, "two", 2)] and offset == 8
    assert read_new(tmp_path / "missing.log", 5) == ([], 5)


def test_a_truncated_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    # The next link of a chain truncates a log path without %j (sbatch's default open mode).
    log = tmp_path / "x.log"
    log.write_bytes(b"link 1 wrote a long line\n")
    _, offset = read_new(log, 0, link=1)
    log.write_bytes(b"done\n")
    lines, offset = read_new(log, offset, link=2)
    assert [(x.offset, x.text, x.link) for x in lines] == [(0, "done", 2)] and offset == 5


def test_keys_tell_links_apart_only_where_needed() -> None:
    plain = LogLine("x.log", 0, "done")
    first = LogLine("x.log", 0, "done", 1)
    second = LogLine("x.log", 0, "done", 2)
    keys = [m.key for m in matches([EVENT], [plain, first, second])]
    assert keys == ["done@x.log:0", "done@x.log:0", "done@x.log:0#link2"]
