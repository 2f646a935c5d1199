"""A job's resolved config made from another job's of the same swept keys: only the values
that depend on the sweep point are computed again.

`depends.Shared` tells which values depend on the point; the resolver shares the others, but
still walks every mapping that holds a dependent value. For the common sweep (swept keys set
to plain numbers and texts; values that depend on them written as keys and text, such as
`name: "run_${vars.lr}"`), a `Leaves` plan, made once per set of swept keys from the first
job's config, gives each further job's config directly: the mappings along the dependent
values copied, those values set or rendered, everything else the first job's (shared) objects.

Anything else (a resolver call in a dependent value, a mapping or a template as a swept value,
a value large enough to meet a limit, siblings, filters) is resolved as before, so every
error and every position stays the resolver's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .errors import Origin
from .functions import text_of
from .template import Key, ParseError, parse
from .tree import KeyPath, key_path
from .value_sizes import MAX_INT_BITS, MAX_TEXT

_Text = tuple[str, ...]  # a path with list indices as text, as `depends` writes them
_SCALARS = frozenset({str, int, float, bool, type(None)})

# Where a key of a dependent value reads from:
_SWEPT, _LEAF, _CONSTANT = 0, 1, 2


class Made(Protocol):
    """Configs made from one model config, which passed every check: where they differ."""

    @property
    def model(self) -> dict[str, Any]:
        """The model config."""

    @property
    def paths(self) -> list[KeyPath]:
        """Where the configs made from the model differ from it: texts and numbers only."""


class Leaves:
    """How to make the config of a job of one set of swept keys from a model job's."""

    def __init__(
        self,
        model: dict[str, Any],
        spine: list[tuple[int, str | int]],
        swept: list[tuple[int, str | int, str, KeyPath]],
        rendered: list[tuple[int, str | int, KeyPath, bool, list[Any]]],
    ) -> None:
        self._model = model
        # Mappings and lists to copy, parents first: (index of the parent's copy, key).
        self._spine = spine
        # Swept values: (copy holding it, key, swept key, path).
        self._swept = swept
        # Dependent values in an order where each comes after those it reads: (copy holding
        # it, key, path, whether the text is one key (its origin is the key's), pieces). A
        # piece is text, or (_SWEPT, swept key, target), (_LEAF, number, target) or
        # (_CONSTANT, value, target).
        self._rendered = rendered
        self._programs = [_program(r[4]) for r in rendered]
        self._paths = [s[3] for s in swept] + [r[2] for r in rendered]

    def config(
        self,
        values: Mapping[str, Any],
        origins: Sequence[Mapping[KeyPath, Origin]],
        learnt: Mapping[KeyPath, Any],
        derived: dict[KeyPath, Origin],
    ) -> tuple[dict[str, Any], list[Any]] | None:
        """The job's config for the point `values` and its values at `paths`, or None when
        the resolver must make it. `origins`: the job's, the first holding a path first (as
        a ChainMap of them reads, without its cost); `learnt`: where shared values came
        from; `derived` receives where each dependent value that is one key came from, as the
        resolver records it."""
        given = self._given(values)
        made = None if given is None else self._made(given)
        if given is None or made is None:
            return None
        config = dict(self._model)
        copies: list[Any] = [config]
        for parent, key in self._spine:
            node = copies[parent][key]
            copy = dict(node) if type(node) is dict else list(node)
            copies[parent][key] = copy
            copies.append(copy)
        for holder, key, dotted, _ in self._swept:
            copies[holder][key] = given[dotted]
        for (holder, key, path, whole, pieces), value in zip(self._rendered, made, strict=True):
            copies[holder][key] = value
            if whole:
                for piece in pieces:
                    if type(piece) is tuple:
                        target = piece[2]
                        source = derived.get(target) or learnt.get(target)
                        if source is None:
                            for layer in origins:
                                source = layer.get(target)
                                if source is not None:
                                    break
                        if source is not None:
                            derived[path] = source
        return config, [*(given[dotted] for _, _, dotted, _ in self._swept), *made]

    @property
    def model(self) -> dict[str, Any]:
        """The config the others are made from (it passed every check)."""
        return self._model

    @property
    def paths(self) -> list[KeyPath]:
        """Where the configs made from the model differ from it: texts and numbers only."""
        return self._paths

    def _given(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The swept values as the job's config holds them, if all are plain text (without
        `$`) or numbers."""
        given: dict[str, Any] = {}
        for _, _, dotted, _ in self._swept:
            value = values[dotted]
            kind = type(value)
            if kind is str:
                if "$" in value:
                    return None  # a template, resolved per job
            elif isinstance(value, str):
                value = value.replace("\\${", "${")  # as `resolve.unescape`: plain text
                if "$" in value:
                    return None
            elif kind not in _SCALARS:
                return None
            given[dotted] = value
        return given

    def _made(self, given: dict[str, Any]) -> list[Any] | None:
        """The dependent values, in order; None for a value that meets a resolver's limit."""
        made: list[Any] = []
        for single, pieces in self._programs:
            if single:
                kind, what = pieces[0]
                made.append(
                    given[what] if kind == _SWEPT else made[what] if kind == _LEAF else what
                )
                continue
            out = []
            for piece in pieces:
                if type(piece) is str:
                    out.append(piece)
                    continue
                kind, what = piece
                value = given[what] if kind == _SWEPT else made[what]
                # As `functions.text_of`, for the exact types a swept or made value has.
                kind = type(value)
                if kind is str:
                    out.append(value)
                elif kind is int:
                    if value.bit_length() > MAX_INT_BITS:
                        return None
                    out.append(int.__repr__(value))
                else:
                    out.append(text_of(value))
            text = "".join(out)
            if len(text) > MAX_TEXT:
                return None
            made.append(text)
        return made


def _program(pieces: list[Any]) -> tuple[bool, list[Any]]:
    """A template's pieces as `_made` reads them: (whether it is one key, pieces), where a
    piece is text (a constant's text included) or (_SWEPT, swept key) or (_LEAF, number)
    (or, alone, (_CONSTANT, value))."""
    if len(pieces) == 1 and type(pieces[0]) is tuple:
        kind, what, _ = pieces[0]
        return True, [(kind, what)]
    out: list[Any] = []
    for piece in pieces:
        if type(piece) is tuple:
            kind, what, _ = piece
            # A constant's text: the model rendered this template with it, within the limits.
            piece = text_of(what) if kind == _CONSTANT else (kind, what)
        if type(piece) is str and out and type(out[-1]) is str:
            out[-1] += piece
        else:
            out.append(piece)
    return False, out


def plan(
    base: dict[str, Any],
    model: dict[str, Any],
    dependent: set[_Text],
    keys: list[str],
) -> Leaves | None:
    """The plan for jobs setting `keys` (in this order), made from `model` (a job's resolved
    config of these keys, which every further job shares but for its dependent values), or
    None when these jobs are resolved by the resolver."""
    swept_paths = {key: key_path(key) for key in keys}
    swept_text = {tuple(str(p) for p in path): key for key, path in swept_paths.items()}
    if len(swept_text) != len(keys):
        return None
    templates = _templates(base, model, dependent, swept_text)
    if templates is None:
        return None
    reads: dict[_Text, tuple[bool, list[Any]]] = {}
    for text_path, (path, text) in templates.items():
        pieces = _pieces(path, text, model, dependent, swept_text, templates)
        if pieces is None:
            return None
        reads[text_path] = (text.startswith("${") and text.count("${") == 1, pieces)
    order = _ordered(reads)
    if order is None:
        return None
    paths = [swept_paths[key] for key in swept_text.values()] + [templates[t][0] for t in order]
    spine = _spine(model, paths)
    if spine is None:
        return None
    spine_index = {path: n for n, path in enumerate(spine)}
    swept = [
        (spine_index[path[:-1]], path[-1], key, path)
        for key, path in ((k, swept_paths[k]) for k in swept_text.values())
    ]
    number = {text_path: n for n, text_path in enumerate(order)}
    rendered = []
    for text_path in order:
        path = templates[text_path][0]
        whole, pieces = reads[text_path]
        fixed = [
            (_LEAF, number[p[1]], p[2]) if type(p) is tuple and p[0] == _LEAF else p for p in pieces
        ]
        rendered.append((spine_index[path[:-1]], path[-1], path, whole, fixed))
    copied = [(spine_index[path[:-1]], path[-1]) for path in spine[1:]]
    return Leaves(model, copied, swept, rendered)


def _templates(
    base: dict[str, Any], model: dict[str, Any], dependent: set[_Text], swept: dict[_Text, str]
) -> dict[_Text, tuple[KeyPath, str]] | None:
    """The dependent templates of the base, by path, if none of them or of the swept keys
    lies inside another (a mapping or a list that depends on the point as a whole)."""
    templates: dict[_Text, tuple[KeyPath, str]] = {}
    for text_path in dependent:
        if text_path in swept:
            continue
        found = _template(base, text_path)
        if found is None:
            if text_path[0] in ("sibling", "\0filters") and text_path[0] not in model:
                continue  # set per job only with siblings or filters: not in these jobs
            return None
        templates[text_path] = found
    every = sorted([*swept, *templates], key=len)
    prefixes = set()
    for path in every:
        if any(path[:n] in prefixes for n in range(1, len(path))):
            return None
        prefixes.add(path)
    return templates


def _pieces(
    path: KeyPath,
    text: str,
    model: dict[str, Any],
    dependent: set[_Text],
    swept: dict[_Text, str],
    templates: dict[_Text, tuple[KeyPath, str]],
) -> list[Any] | None:
    """The template's text and keys, each key with where its value comes from; None when
    it holds anything else (a resolver call: its arguments, its errors, are the resolver's)."""
    try:
        template = parse(text)
    except ParseError:
        return None
    pieces: list[Any] = []
    for part in template:
        if isinstance(part, str):
            pieces.append(part)
            continue
        if not isinstance(part, Key) or part.up > len(path):
            return None
        target: KeyPath = (*path[: -part.up], *part.parts) if part.up else part.parts
        as_text = tuple(str(p) for p in target)
        if as_text in swept:
            pieces.append((_SWEPT, swept[as_text], target))
        elif as_text in templates:
            pieces.append((_LEAF, as_text, target))
        elif any(d[: len(as_text)] == as_text or as_text[: len(d)] == d for d in dependent):
            return None  # a mapping that holds a dependent value, or a part of one
        else:
            value = _walk(model, as_text)
            if type(value) not in _SCALARS:
                return None
            pieces.append((_CONSTANT, value, target))
    return pieces


def _spine(model: dict[str, Any], paths: list[KeyPath]) -> list[KeyPath] | None:
    """The mappings and lists to copy, parents first (the top first), if the model holds a
    text or a number at each of `paths`: every job made from it then holds as many values as
    the model, which passed `value_sizes.check_expanded`."""
    spine = sorted({p[:n] for p in paths for n in range(len(p))}, key=len)
    for path in spine:
        if type(_at(model, path)) not in (dict, list):
            return None
    if any(type(_at(model, path)) not in _SCALARS for path in paths):
        return None
    return spine


def _template(base: dict[str, Any], text_path: _Text) -> tuple[KeyPath, str] | None:
    """The path (list indices as numbers) and text of the template at `text_path` of the base,
    reached without passing through another template."""
    node: Any = base
    path: list[str | int] = []
    for part in text_path:
        if type(node) is dict and part in node:
            node = node[part]
            path.append(part)
        elif type(node) is list and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            path.append(int(part))
        else:
            return None
    if type(node) is not str or "${" not in node:
        return None
    return tuple(path), node


def _walk(config: Any, text_path: _Text) -> Any:
    """The resolved value at `text_path` (list indices as text), or a marker of none."""
    node = config
    for part in text_path:
        if type(node) is dict and part in node:
            node = node[part]
        elif type(node) is list and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _Missing
    return node


class _Missing:
    """No value there."""


def _at(config: Any, path: KeyPath) -> Any:
    """The value at `path` (list indices as numbers), or a marker of none."""
    node: Any = config
    for part in path:
        held = part in node if type(node) is dict else _index(node, part)
        if held:
            node = node[part]
        else:
            return _Missing
    return node


def _index(node: Any, part: str | int) -> bool:
    return type(node) is list and type(part) is int and 0 <= part < len(node)


def _ordered(reads: dict[_Text, tuple[bool, list[Any]]]) -> list[_Text] | None:
    """The templates, each after those it reads; None on a cycle (the resolver reports it)."""
    order: list[_Text] = []
    state: dict[_Text, int] = {}  # 1: being placed, 2: placed

    def place(text_path: _Text, depth: int) -> bool:
        seen = state.get(text_path)
        if seen is not None:
            return seen == 2
        if depth > 100:
            return False
        state[text_path] = 1
        for piece in reads[text_path][1]:
            if type(piece) is tuple and piece[0] == _LEAF and not place(piece[1], depth + 1):
                return False
        state[text_path] = 2
        order.append(text_path)
        return True

    return order if all(place(t, 0) for t in reads) else None
