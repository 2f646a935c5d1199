"""Resolve `${...}` interpolations in a composed config tree (OmegaConf syntax).

Keys (`${a.b}`, `${.x}`, `${..x}`), resolvers (`${oc.env:VAR,default}`, `${oc.eval:'1+1'}`, ...)
and nesting. A string that is exactly one interpolation keeps the value's type; anything else
is text. `\\${` is an escape: a literal `${` in the result, except under the sweep, where it
stays escaped so that the per-job stage can resolve it against each job's own config.
`template` parses the strings; `value_sizes` holds the limits on what they resolve to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .depends import Shared
from .errors import ConfigError, Origin, Problem, did_you_mean, fail
from .functions import FUNCTIONS, TEXT_ARGUMENTS, FunctionError, primitive, text_of
from .template import (
    Arg,
    Call,
    Key,
    ParseError,
    Part,
    Template,
    has_interpolation,
    parse,
)
from .tree import KeyPath, dotted, map_strings, origin_of, split_key, strings
from .value_sizes import MAX_TEXT, check_size, too_big

_MISSING = object()
_PLAIN = frozenset({int, float, bool, type(None)})

MAX_CHAIN = 100
"""Keys one value may be looked up through (`a: ${b}`, `b: ${c}`, ...); resolution recurses."""


class Interpolator:
    """Resolves one tree. Values are memoised per path; a cycle is an error naming its keys.

    `keep_escaped` names a top-level key (the sweep) whose `\\${` stays escaped.
    """

    def __init__(
        self,
        tree: dict[str, Any],
        origins: Mapping[KeyPath, Origin],
        env: Mapping[str, str],
        keep_escaped: str | None = None,
        static: Mapping[int, int] | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.tree = tree
        self.static = static or {}
        # Values every job of this sweep point's keys resolves alike: taken, or kept, here.
        self.shared = shared
        self.origins = origins
        self.env = env
        self.keep_escaped = keep_escaped
        self._done: dict[KeyPath, Any] = {}
        self._active: list[KeyPath] = []
        self._texts: list[str] = []  # the text being resolved at each path of `_active`
        # Where a value really came from when its key only points elsewhere (`name: ${a.b}`),
        # so that an invalid value is reported where it was written.
        self.derived: dict[KeyPath, Origin] = {}

    # -- public

    def resolve(self, path: KeyPath = ()) -> Any:
        """The fully resolved value at `path` (a copy; the input tree is not changed)."""
        if self.shared is not None:
            found = self.shared.values.get(path, _MISSING)
            if found is not _MISSING:
                return found
        return self._value(path, self._node(path))

    def where(self, path: KeyPath) -> Origin | None:
        return origin_of(self.origins, path)

    # -- tree walking

    def _node(self, path: KeyPath) -> Any:
        node: Any = self.tree
        for depth, key in enumerate(path):
            node = self._child(node, key, path[:depth])
            if node is _MISSING:
                raise KeyError(path)
        return node

    def _child(self, node: Any, key: str | int, parent: KeyPath) -> Any:
        if isinstance(node, str) and has_interpolation(node):
            node = self._value(parent, node)
        if isinstance(node, dict):
            return node.get(key, _MISSING) if isinstance(key, str) else _MISSING
        if isinstance(node, list):
            index = int(key) if isinstance(key, int) or key.isdigit() else -1
            return node[index] if 0 <= index < len(node) else _MISSING
        return _MISSING

    def _value(self, path: KeyPath, node: Any) -> Any:
        if id(node) in self.static:
            return node  # shared with the base config: nothing inside it to resolve
        shared = self.shared
        if shared is None or not isinstance(node, (dict, list, str)):
            return self._resolved(path, node)
        found = shared.values.get(path, _MISSING)
        if found is not _MISSING:
            return found
        value = self._resolved(path, node)
        if shared.independent(path):
            shared.values[path] = value
            if isinstance(value, (dict, list)):
                shared.lasting.add(id(value))
            if path in self.derived:
                shared.derived[path] = self.derived[path]
        return value

    def _resolved(self, path: KeyPath, node: Any) -> Any:
        if isinstance(node, dict):
            # Plain text and numbers (most values) are taken as they are, without a call.
            return {
                k: v
                if (type(v) is str and "$" not in v) or type(v) in _PLAIN
                else self._value((*path, k), v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [self._value((*path, i), v) for i, v in enumerate(node)]
        if not isinstance(node, str) or "$" not in node:
            return node
        if path in self._done:
            return self._done[path]
        if path in self._active:
            cycle = [*self._active[self._active.index(path) :], path]
            raise fail(
                "interpolation cycle: " + " -> ".join(dotted(p) for p in cycle),
                origin_of(self.origins, path),
                key=dotted(path),
            )
        if len(self._active) >= MAX_CHAIN:
            start = self._active[0]
            chain = " -> ".join(dotted(p) for p in self._active[:3])
            raise fail(
                f"interpolations refer through more than {MAX_CHAIN} keys: {chain} -> ...",
                origin_of(self.origins, start),
                key=dotted(start),
                hint="refer to the value directly instead of through a long chain of keys",
            )
        self._active.append(path)
        self._texts.append(node)
        try:
            keep = self.keep_escaped is not None and path[:1] == (self.keep_escaped,)
            try:
                template = parse(node, keep)
            except ParseError as exc:
                raise fail(exc.message, self._origin(path), key=dotted(path)) from None
            value = self._render(template, path, keep)
        finally:
            self._active.pop()
            self._texts.pop()
        self._done[path] = value
        return value

    def _origin(self, path: KeyPath) -> Origin | None:
        return origin_of(self.origins, path)

    def _render(self, template: Template, path: KeyPath, keep: bool = False) -> Any:
        if len(template) == 1 and not isinstance(template[0], str):
            value = self._part(template[0], path)
            return self._protected(value, path) if keep else value
        out = []
        size = 0
        for part in template:
            if isinstance(part, str):
                out.append(part)
            else:
                value = self._part(part, path)
                check_size(value, self.origins, path, MAX_TEXT - size)
                text = text_of(value)
                out.append(self._protected(text, path) if keep else text)
            size += len(out[-1])
            if size > MAX_TEXT:
                raise too_big(self.origins, path)
        return "".join(out)

    def _protected(self, value: Any, path: KeyPath) -> Any:
        """A value resolved inside the sweep, escaped so that the per-job stage keeps it as
        text. A backslash right before `${` cannot be carried through that stage (it would
        read as an escape), so such a value is refused rather than changed."""
        if _holds_escape(value):
            raise fail(
                "a value resolved inside the sweep holds a backslash right before '${', which "
                "the per-job stage would read as an escape",
                self._origin(path),
                key=dotted(path),
                hint="let each job resolve it instead: set it outside the sweep (vars.x: "
                "${oc.env:NAME}) and write \\${vars.x} in the sweep",
            )
        return _protect(value)

    def _part(self, part: Part, path: KeyPath) -> Any:
        if isinstance(part, str):
            return part
        if isinstance(part, Key):
            return self._lookup(part, path)
        return self._call(part, path)

    def _target(self, key: Key, path: KeyPath) -> KeyPath:
        if key.up == 0:
            return key.parts
        base = path[: -key.up] if key.up <= len(path) else None
        if base is None:
            raise fail(
                f"'{key.text}' climbs above the top of the config",
                self._origin(path),
                key=dotted(path),
            )
        return (*base, *key.parts)

    def _lookup(self, key: Key, path: KeyPath) -> Any:
        target = self._target(key, path)
        # A value another job resolved already needs no walk to it.
        value = _MISSING if self.shared is None else self.shared.values.get(target, _MISSING)
        if value is _MISSING:
            try:
                node = self._node(target)
            except KeyError:
                raise self._missing(key.text, target, path) from None
            value = self._value(target, node)
        if self._active and self._active[-1] == path and _whole(self._texts[-1]):
            source = self.derived.get(target) or self._shared_origin(target)
            if source is not None:
                self.derived[path] = source
        return value

    def _shared_origin(self, target: KeyPath) -> Origin | None:
        # A value another job resolved: where it came from was learnt then.
        found = self.shared.derived.get(target) if self.shared is not None else None
        return found or self.origins.get(target)

    def _missing(self, text: str, target: KeyPath, path: KeyPath) -> ConfigError:
        parent: Any = self.tree
        known: list[str] = []
        for k in target[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            known = list(parent)
        return ConfigError(
            Problem(
                f"'{text}' refers to '{dotted(target)}', which does not exist",
                self._origin(path),
                key=dotted(path),
                hint=did_you_mean(str(target[-1]), known) if target else None,
            )
        )

    def _call(self, call: Call, path: KeyPath) -> Any:
        impl = FUNCTIONS.get(call.name)
        if impl is None:
            raise fail(
                f"unknown resolver '{call.name}' in '{call.text}'",
                self._origin(path),
                key=dotted(path),
                hint=did_you_mean(call.name, FUNCTIONS),
            )
        if call.name == "oc.select":
            return self._select(call, path)
        raw = call.name in TEXT_ARGUMENTS
        args = [self._arg(a, path, raw) for a in call.args]
        try:
            result = impl(self.env, args)
        except FunctionError as exc:
            raise fail(
                f"{call.text}: {exc.message}",
                self._origin(path),
                key=dotted(path),
                hint=exc.hint,
            ) from None
        check_size(result, self.origins, path)
        return result

    def _select(self, call: Call, path: KeyPath) -> Any:
        # `oc.select` takes a key, not a value: a missing key gives the default.
        if not call.args or len(call.args) > 2:
            raise fail(
                f"{call.text}: takes a key and an optional default",
                self._origin(path),
                key=dotted(path),
            )
        name = text_of(self._arg(call.args[0], path))
        default = self._arg(call.args[1], path) if len(call.args) == 2 else None
        up = len(name) - len(name.lstrip("."))
        key = Key(up, tuple(split_key(name[up:])), name)
        try:
            node = self._node(self._target(key, path))
        except KeyError:
            return default
        value = self._value(self._target(key, path), node)
        return default if value is None else value

    def _arg(self, arg: Arg, path: KeyPath, raw: bool = False) -> Any:
        if arg.quoted:
            return "".join(text_of(self._part(p, path)) for p in arg.parts)
        if len(arg.parts) == 1 and not isinstance(arg.parts[0], str):
            return self._part(arg.parts[0], path)
        if all(isinstance(p, str) for p in arg.parts):
            text = "".join(arg.parts)  # type: ignore[arg-type]
            if raw:
                # Text as written (`1e-4` stays `1e-4`); only null still means null.
                return None if text.lower() in ("null", "~") else text
            return primitive(text)
        return "".join(text_of(self._part(p, path)) for p in arg.parts)


def _whole(text: str) -> bool:
    """Whether the text is one interpolation and nothing else (`${a.b}`)."""
    return text.startswith("${") and text.count("${") == 1


def _holds_escape(value: Any) -> bool:
    return any("\\${" in text for text in strings(value))


def _protect(value: Any) -> Any:
    """Under the sweep, a `${` that came out of a resolved value is data, not a template.

    The per-job stage turns an escaped `\\${` into a live `${`; text that resolution produced
    (an environment variable holding `${HOME}`, say) is escaped once more so it stays text.
    """
    return map_strings(value, lambda text: text.replace("${", "\\\\${"))
