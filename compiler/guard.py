"""Limits on raw config input, checked before ruamel.yaml builds any Python object.

A config file is text a user wrote, so every file must end in data or in one positioned error:
bytes that are not UTF-8, nesting deep enough to exhaust Python's stack, tags that would build
objects, aliases that expand a few lines into billions of values ("billion laughs") and integers
too long to print are refused here, each with the file and where in it.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml.composer import Composer
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError, Origin, fail

MAX_FILE_BYTES = 128 * 1024
"""Far above any real config (the largest shipped one is under 4 KB). The pure-Python YAML
parser reads about 25,000 values a second: the worst file of this size takes 6 s of CPU."""

MAX_DEPTH = 100
"""Mappings and lists nested deeper than this are refused; ruamel composes recursively."""

MAX_VALUES = 200_000
"""Values one file may hold once every alias is expanded (each alias copies its anchor)."""

INT_RANGE = (-(2**63), 2**64 - 1)
"""Integers must fit in 64 bits, signed or unsigned: what any program a job starts can take."""

_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset(
    _CORE + name for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)
_MERGE = _CORE + "merge"
_DIGITS = re.compile(r"[-+]?[0-9_]+")
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_REENCODE = "re-save the file as UTF-8 (for example `iconv -f {0} -t UTF-8 in.yaml > out.yaml`)"


class Refused(Exception):
    """A limit broken while composing: `load.py` adds the file name."""

    def __init__(self, message: str, node: Node, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = node.start_mark.line + 1
        self.col = node.start_mark.column + 1
        self.hint = hint


def decode(data: bytes, display: str) -> str:
    """Strict UTF-8 (a UTF-8 byte-order mark is allowed): anything else names the byte."""
    if len(data) > MAX_FILE_BYTES:
        raise fail(
            f"the file is {len(data):,} bytes; config files are limited to "
            f"{MAX_FILE_BYTES // 1024} KiB",
            Origin(display, 1, 1),
            hint="sweep with params or grids instead of listing every point",
        )
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise fail(
                f"byte 0: the file is {encoding} (it starts with a byte-order mark); "
                "config files must be UTF-8",
                Origin(display, 1, 1),
                hint=_REENCODE.format(encoding),
            )
    data = data.removeprefix(b"\xef\xbb\xbf")
    nul = data.find(b"\0")
    if nul >= 0:
        raise _bad_byte(
            data, nul, display, "is a NUL byte", _REENCODE.format("UTF-16") + " if it is UTF-16"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_byte(
            data,
            exc.start,
            display,
            f"(0x{data[exc.start]:02x}) is not valid UTF-8",
            _REENCODE.format("LATIN1") + " if it is Latin-1",
        ) from None


def _bad_byte(data: bytes, offset: int, display: str, what: str, hint: str) -> ConfigError:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return fail(
        f"byte {offset} {what}; config files must be UTF-8", Origin(display, line, col), hint=hint
    )


def unencodable(text: str) -> bool:
    """Whether a string holds a lone surrogate (from a `\\ud800` escape), which UTF-8 cannot."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class GuardedComposer(Composer):
    """ruamel's composer, refusing what the module docstring lists as it builds each node.

    ruamel shares an anchored node among its aliases; `_sizes` counts the values each node
    stands for once expanded, so a bomb is refused in time linear in the file's length.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        node = super().compose_node(parent, index)
        if id(node) in self._sizes:
            return node  # an alias: the anchored node was checked when it was composed
        tag = str(node.tag)
        if tag not in _ALLOWED_TAGS and not (tag == _MERGE and isinstance(node, ScalarNode)):
            raise Refused(
                f"the YAML tag '{_short(tag)}' is not supported: a config holds only mappings, "
                "lists, strings, numbers, booleans and null",
                node,
                hint="remove the tag (quote the value to keep it as text)",
            )
        size = 1
        if isinstance(node, ScalarNode):
            if tag == _CORE + "int":
                _check_digits(node)
        elif isinstance(node, SequenceNode):
            size += sum(self._sizes[id(item)] for item in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        if size > MAX_VALUES:
            raise Refused(
                f"aliases expand this file to more than {MAX_VALUES:,} values",
                node,
                hint="each *alias copies its &anchor's whole value; nested aliases multiply",
            )
        self._sizes[id(node)] = size
        return node


def _check_digits(node: ScalarNode) -> None:
    # Python refuses to convert integers of more than 4300 digits; nothing of 21 digits fits
    # in 64 bits, so such a value is refused before it is converted at all.
    text = str(node.value)
    if _DIGITS.fullmatch(text) and len(text.lstrip("+-").replace("_", "").lstrip("0")) > 20:
        raise Refused(
            f"the integer {text[:20]}... ({len(text)} characters) does not fit in 64 bits",
            node,
            hint="quote it to keep it as text",
        )


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
