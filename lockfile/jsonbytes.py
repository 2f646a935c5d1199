"""Pretty JSON, byte for byte what `json.dumps(value, indent=2, sort_keys=True,
ensure_ascii=False, default=str)` writes, without the standard library's pure-Python pretty
printer (the C encoder has no indentation before Python 3.13), and with the text of shared
parts (configuration that thousands of jobs share, unchanged) written once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

_string = json.encoder.encode_basestring  # the C function where available, as json uses
_INDENT = "  "
_PIECE = 4096  # parts gathered before they are written


class PrettyJson:
    """Encodes values; `shared` maps ids of containers that stay alive and unchanged while this
    encoder is used (the base config's parts) to anything: their text is kept and reused."""

    def __init__(self, shared: Mapping[int, object] | None = None) -> None:
        self._shared = shared or {}
        self._texts: dict[int, str] = {}
        # While `dump` runs: its parts (shared parts are encoded into lists of their own) and
        # where they go once there are many.
        self._out: list[str] | None = None
        self._write: Callable[[str], object] | None = None

    def dumps(self, value: Any) -> str:
        out: list[str] = []
        self._value(value, 0, out)
        return "".join(out)

    def dump(self, value: Any, write: Callable[[str], object]) -> None:
        """Write the text and its final newline in pieces of a bounded size (a lockfile of
        100,000 jobs is never one string in memory)."""
        out: list[str] = []
        self._out, self._write = out, write
        try:
            self._value(value, 0, out)
        finally:
            self._out = self._write = None
        write("".join(out) + "\n")

    def _flush(self, out: list[str]) -> None:
        assert self._write is not None
        self._write("".join(out))
        out.clear()

    def _value(self, value: Any, level: int, out: list[str]) -> None:
        if isinstance(value, str):
            out.append(_string(value))
        elif value is None:
            out.append("null")
        elif value is True:
            out.append("true")
        elif value is False:
            out.append("false")
        elif isinstance(value, int):
            out.append(int.__repr__(value))
        elif isinstance(value, float):
            out.append(_float(value))
        elif isinstance(value, (dict, list, tuple)):
            if not value:
                out.append("{}" if isinstance(value, dict) else "[]")
                return
            key = id(value)
            if key in self._shared:
                text = self._texts.get(key)
                if text is None:
                    parts: list[str] = []
                    self._container(value, 0, parts)
                    text = self._texts[key] = "".join(parts)
                out.append(text.replace("\n", "\n" + _INDENT * level) if level else text)
            else:
                self._container(value, level, out)
        else:
            self._value(str(value), level, out)

    def _container(self, value: Any, level: int, out: list[str]) -> None:
        inner = "\n" + _INDENT * (level + 1)
        if all(
            type(item) in _SCALARS
            for item in (value.values() if isinstance(value, dict) else value)
        ):
            # Only scalars inside: the C encoder writes them, its item separator carrying
            # the line break and this level's indentation.
            text = _flat(level).encode(value)
            out.append(text[0] + inner + text[1:-1] + "\n" + _INDENT * level + text[-1])
            return
        if isinstance(value, dict):
            out.append("{")
            first = True
            for key, item in sorted(value.items(), key=_first):
                out.append(inner if first else "," + inner)
                first = False
                out.append(_string(key) if type(key) is str else _key(key))
                out.append(": ")
                if type(item) is str:
                    out.append(_string(item))  # most values: no call needed
                else:
                    self._value(item, level + 1, out)
                if len(out) > _PIECE and out is self._out:
                    self._flush(out)
            out.append("\n" + _INDENT * level + "}")
        else:
            out.append("[")
            first = True
            for item in value:
                out.append(inner if first else "," + inner)
                first = False
                self._value(item, level + 1, out)
                if len(out) > _PIECE and out is self._out:
                    self._flush(out)
            out.append("\n" + _INDENT * level + "]")


_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _flat(level: int) -> json.JSONEncoder:
    """An encoder of a container of scalars at `level`, less its opening and closing lines."""
    return json.JSONEncoder(
        ensure_ascii=False, sort_keys=True, separators=(",\n" + _INDENT * (level + 1), ": ")
    )


def _first(item: tuple[Any, Any]) -> Any:
    return item[0]


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == -float("inf"):
        return "-Infinity"
    return float.__repr__(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return _string(key)
    if isinstance(key, float):
        return _string(_float(key))
    if key is True:
        return '"true"'
    if key is False:
        return '"false"'
    if key is None:
        return '"null"'
    if isinstance(key, int):
        return _string(int.__repr__(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def pretty_json(value: Any, encoder: PrettyJson | None = None) -> bytes:
    """The file's bytes: the text and a final newline, in UTF-8."""
    return ((encoder or PrettyJson()).dumps(value) + "\n").encode("utf-8")
