"""Pretty JSON, byte for byte what `json.dumps(value, indent=2, sort_keys=True,
ensure_ascii=False, default=str)` writes, without the standard library's pure-Python pretty
printer (the C encoder has no indentation before Python 3.13), and with the text of shared
parts (configuration that thousands of jobs share, unchanged) written once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_string = json.encoder.encode_basestring  # the C function where available, as json uses
_INDENT = "  "


class PrettyJson:
    """Encodes values; `shared` maps ids of containers that stay alive and unchanged while this
    encoder is used (the base config's parts) to anything: their text is kept and reused."""

    def __init__(self, shared: Mapping[int, object] | None = None) -> None:
        self._shared = shared or {}
        self._texts: dict[int, str] = {}

    def dumps(self, value: Any) -> str:
        out: list[str] = []
        self._value(value, 0, out)
        return "".join(out)

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
        if isinstance(value, dict):
            out.append("{")
            first = True
            for key, item in sorted(value.items(), key=_first):
                out.append(inner if first else "," + inner)
                first = False
                out.append(_key(key))
                out.append(": ")
                self._value(item, level + 1, out)
            out.append("\n" + _INDENT * level + "}")
        else:
            out.append("[")
            first = True
            for item in value:
                out.append(inner if first else "," + inner)
                first = False
                self._value(item, level + 1, out)
            out.append("\n" + _INDENT * level + "]")


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
