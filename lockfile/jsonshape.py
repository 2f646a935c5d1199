"""Each job's `config.json` (and each job's entry of the lockfile) from a text with holes,
filled with the job's own values.

The jobs of a sweep share most of their resolved config (the same objects, see
`depends.py`) and differ in a few values. A config's shape is its own mappings and lists
(their keys and lengths) and the shared parts it holds; configs of one shape encode to the
same text but for their own scalar values. That text is made once per shape, by encoding a
copy whose scalars are markers, and then checked: filled with the first job's values it must
be byte for byte what `jsonbytes.PrettyJson` writes for that job, or the shape is encoded
job by job as before. A config holding anything else than plain JSON values also is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Sequence
from typing import Any

from oellm.lockfile.jsonbytes import PrettyJson

_string = json.encoder.encode_basestring  # as json and jsonbytes write text (no ASCII escapes)
_TEXT: dict[type, Callable[[Any], str]] = {
    str: _string,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), -float("inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


_TEXT[float] = _float
MAX_SHAPES = 256
"""Shapes kept; past them a config is encoded whole (configs that share no shape would keep
a text each, and be encoded three times each)."""

_MARK = "\ue000"  # a private-use character: markers are "\ue000<n>\ue001"
_HOLE = re.compile(f'"{_MARK}([0-9]+)\ue001"')
_Text = tuple[list[str], list[int]]  # pieces of text, and the value each hole between takes
Path = tuple[str | int, ...]
_UNKNOWN: Any = object()


class ShapedJson:
    """Encodes job configs as `PrettyJson(shared)` does, reusing the text of each shape.
    `shared`: ids of the parts that stay alive and unchanged for the compile."""

    def __init__(self, encoder: PrettyJson, shared: Container[int]) -> None:
        self._encoder = encoder
        self._shared = shared
        # shape -> the text's pieces between the holes, or None: encode job by job
        self._texts: dict[tuple[Any, ...], _Text | None] = {}
        # model -> the text of the configs made from it, with holes at their own values
        self._models: dict[object, _Text | None] = {}

    def encode_at(
        self, key: object, model: dict[str, Any], paths: Sequence[Path], values: Sequence[Any]
    ) -> bytes | None:
        """The bytes of the config that is `model` but for `values` at `paths` (texts and
        numbers, as in the model), the model and its paths named by `key` (the text made
        for them is kept); None when it is to be encoded with `encode`."""
        text = self._models.get(key, _UNKNOWN)
        if text is _UNKNOWN:
            text = None if len(self._models) >= MAX_SHAPES else self._holes(model, paths)
            self._models[key] = text
        if text is None:
            return None
        return (_fill(text, values) + "\n").encode("utf-8")

    def _holes(self, model: dict[str, Any], paths: Sequence[Path]) -> _Text | None:
        """The model's text with a hole at each of `paths`, if filling them with the model's
        own values gives the model's text."""
        own = [_get(model, path) for path in paths]
        if any(type(value) not in _TEXT for value in own):
            return None
        marks = [f"{_MARK}{n}\ue001" for n in range(len(paths))]
        text = _split(self._encoder.dumps(_with(model, paths, marks)), len(paths))
        return text if text is not None and _fill(text, own) == self._encoder.dumps(model) else None

    def encode(self, config: dict[str, Any]) -> bytes:
        """The file's bytes: the text, a final newline, UTF-8."""
        return (self.dumps(config) + "\n").encode("utf-8")

    def dumps(self, config: dict[str, Any]) -> str:
        """The text, as the encoder's `dumps` writes it."""
        shape: list[Any] = []
        values: list[Any] = []
        if self._walk(config, shape, values):
            key = tuple(shape)
            text = self._texts.get(key, _UNKNOWN)
            if text is _UNKNOWN:
                if len(self._texts) >= MAX_SHAPES:
                    return self._encoder.dumps(config)
                text = self._texts[key] = self._pieces(config, values)
            if text is not None:
                return _fill(text, values)
        return self._encoder.dumps(config)

    def _walk(self, node: Any, shape: list[Any], values: list[Any]) -> bool:
        """Shape and own scalars of `node`, in the order the walk meets them; False when the
        node holds a value that is not plain JSON (encoded as a whole instead)."""
        if isinstance(node, dict):
            items: Any = node.values()
            shape.append(tuple(node))
        elif isinstance(node, list):
            items = node
            shape.append(-1 - len(node))  # below zero: never an id
        else:
            return False
        for item in items:
            kind = type(item)
            if kind in _TEXT:
                values.append(item)
                shape.append(None)
            elif kind is dict or kind is list:
                if not item:
                    shape.append(kind)  # empty: written as {} or [] wherever it is
                elif id(item) in self._shared:
                    shape.append(id(item))
                elif not self._walk(item, shape, values):
                    return False
            else:
                return False
        shape.append(...)  # the end of this container
        return True

    def _pieces(self, config: dict[str, Any], values: list[Any]) -> _Text | None:
        """The text of this shape split at its holes (with the number of the value each one
        takes: keys are sorted), if filling it with `values` (this config's) gives what the
        encoder writes for the config."""
        marked = _marked(config, self._shared, iter(range(len(values))))
        text = _split(self._encoder.dumps(marked), len(values))
        if text is None or _fill(text, values) != self._encoder.dumps(config):
            return None
        return text


class ShapedPair(ShapedJson):
    """Two texts of each value, from the same walk: the encoder's pretty text, and the compact
    text that `compact` writes (the lockfile's bytes and its bundle id, in one pass)."""

    def __init__(
        self, encoder: PrettyJson, compact: Callable[[Any], str], shared: Container[int]
    ) -> None:
        super().__init__(encoder, shared)
        self._compact = compact
        self._pairs: dict[tuple[Any, ...], tuple[_Text, _Text] | None] = {}

    def texts(self, value: dict[str, Any]) -> tuple[str, str]:
        """The pretty text and the compact text of `value`."""
        shape: list[Any] = []
        values: list[Any] = []
        if self._walk(value, shape, values):
            key = tuple(shape)
            pair = self._pairs.get(key, _UNKNOWN)
            if pair is _UNKNOWN and len(self._pairs) < MAX_SHAPES:
                pair = self._pairs[key] = self._pair(value, values)
            if pair is not None and pair is not _UNKNOWN:
                texts = _texts(values)  # the same texts in both
                return _join(pair[0], texts), _join(pair[1], texts)
        return self._encoder.dumps(value), self._compact(value)

    def _pair(self, value: dict[str, Any], values: list[Any]) -> tuple[_Text, _Text] | None:
        """Both texts of this shape split at their holes, if filling each with `values` gives
        what its encoder writes for `value`."""
        marked = _marked(value, self._shared, iter(range(len(values))))
        texts = []
        for encode in (self._encoder.dumps, self._compact):
            text = _split(encode(marked), len(values))
            if text is None or _fill(text, values) != encode(value):
                return None
            texts.append(text)
        return texts[0], texts[1]


def _marked(node: Any, shared: Container[int], counter: Any) -> Any:
    """A copy of the config's own part with each scalar a marker, in the order of `_walk`."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    out: dict[Any, Any] = {}
    for key, item in items:
        if type(item) in _TEXT:
            out[key] = f"{_MARK}{next(counter)}\ue001"
        elif not item or id(item) in shared:
            out[key] = item
        else:
            out[key] = _marked(item, shared, counter)
    return out if isinstance(node, dict) else list(out.values())


def _get(tree: Any, path: Path) -> Any:
    node = tree
    for key in path:
        node = node[key]
    return node


def _with(tree: dict[str, Any], paths: Sequence[Path], values: Sequence[Any]) -> dict[str, Any]:
    """A copy of `tree` with `values` at `paths`: only the mappings and lists on the paths
    are copied."""
    top = dict(tree)
    copies: dict[Path, Any] = {(): top}
    for path, value in zip(paths, values, strict=True):
        for n in range(1, len(path)):
            if path[:n] not in copies:
                node = copies[path[: n - 1]][path[n - 1]]
                copies[path[:n]] = copies[path[: n - 1]][path[n - 1]] = (
                    dict(node) if isinstance(node, dict) else list(node)
                )
        copies[path[:-1]][path[-1]] = value
    return top


def _split(marked: str, count: int) -> _Text | None:
    """The text with holes of a text whose values are markers, if it holds each of the
    `count` markers once and no other marker's character (one in a value itself: not worth
    telling apart)."""
    parts = _HOLE.split(marked)
    pieces, order = parts[::2], [int(n) for n in parts[1::2]]
    if sorted(order) != list(range(count)) or any(_MARK in p for p in pieces):
        return None
    return pieces, order


def _texts(values: Sequence[Any]) -> list[str]:
    """Each value's JSON text."""
    return [_string(v) if type(v) is str else _TEXT[type(v)](v) for v in values]


def _join(text: _Text, texts: Sequence[str]) -> str:
    """The text with each hole filled with its value's text."""
    pieces, order = text
    out = [pieces[0]]
    for number, after in zip(order, pieces[1:], strict=True):
        out.append(texts[number])
        out.append(after)
    return "".join(out)


def _fill(text: _Text, values: Sequence[Any]) -> str:
    return _join(text, _texts(values))
