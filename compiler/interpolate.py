"""Resolve `${...}` interpolations in a composed config tree (OmegaConf syntax).

Keys (`${a.b}`, `${.x}`, `${..x}`), resolvers (`${oc.env:VAR,default}`, `${oc.eval:'1+1'}`, ...)
and nesting. A string that is exactly one interpolation keeps the value's type; anything else
is text. `\\${` is an escape: a literal `${` in the result, except under the sweep, where it
stays escaped so that the per-job stage can resolve it against each job's own config.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, Origin, Problem, did_you_mean, fail
from .load import Path_
from .safeeval import ExpressionError, evaluate
from .tree import origin_of

# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class Key:
    """`${a.b}`, `${.x}` or `${..x}`: `up` is the number of leading dots."""

    up: int
    parts: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Arg, ...]
    text: str


@dataclass(frozen=True)
class Arg:
    parts: tuple[Part, ...]
    quoted: bool


Part = str | Key | Call
Template = tuple[Part, ...]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(?=:)")
_INT = re.compile(r"[-+]?[0-9][0-9_]*")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


class ParseError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def has_interpolation(text: str) -> bool:
    return "${" in text


@functools.lru_cache(maxsize=65536)
def parse(text: str, keep_escaped: bool = False) -> Template:
    """Split a string into text and interpolations; cached, as strings repeat across jobs."""
    parts, end = _parse_parts(text, 0, keep_escaped, stop="")
    assert end == len(text)
    return parts


def _parse_parts(text: str, i: int, keep_escaped: bool, stop: str) -> tuple[Template, int]:
    parts: list[Part] = []
    buf: list[str] = []
    n = len(text)
    while i < n:
        if stop and text[i] in stop:
            break
        if text.startswith("\\\\${", i):
            buf.append("\\")
            i += 2
            continue
        if text.startswith("\\${", i):
            buf.append("\\${" if keep_escaped else "${")
            i += 3
            continue
        if text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            node, i = _parse_interp(text, i + 2, keep_escaped)
            parts.append(node)
            continue
        if stop and text[i] == "\\" and i + 1 < n:
            buf.append(text[i + 1])
            i += 2
            continue
        buf.append(text[i])
        i += 1
    if buf:
        parts.append("".join(buf))
    return tuple(parts), i


def _parse_interp(text: str, i: int, keep_escaped: bool) -> tuple[Key | Call, int]:
    start = i - 2
    name = _NAME.match(text, i)
    if name:
        i = name.end() + 1
        args: list[Arg] = []
        while True:
            arg, i = _parse_arg(text, i, keep_escaped)
            args.append(arg)
            if i >= len(text):
                raise ParseError(f"unclosed interpolation '{text[start:]}'")
            if text[i] == "}":
                i += 1
                break
            i += 1  # the comma
        if len(args) == 1 and not args[0].parts and not args[0].quoted:
            args = []
        return Call(name.group(0), tuple(args), text[start:i]), i
    end = text.find("}", i)
    if end < 0:
        raise ParseError(f"unclosed interpolation '{text[start:]}'")
    body = text[i:end].strip()
    if "${" in body or not body:
        raise ParseError(f"'{text[start : end + 1]}' is not a key or a resolver call")
    up = len(body) - len(body.lstrip("."))
    path = body[up:]
    segments = tuple(_split_key(path)) if path else ()
    if any(not s for s in segments):
        raise ParseError(f"'{text[start : end + 1]}' is not a valid key")
    return Key(up, segments, text[start : end + 1]), end + 1


def _split_key(path: str) -> list[str]:
    # `a.b[0].c` and `a.b.0.c` name the same thing.
    return [s for s in re.split(r"\.|\[|\]", path.replace("].", "]")) if s != ""] or [""]


def _parse_arg(text: str, i: int, keep_escaped: bool) -> tuple[Arg, int]:
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] in "'\"":
        quote = text[i]
        parts, j = _parse_quoted(text, i + 1, quote, keep_escaped)
        j += 1
        while j < n and text[j] in " \t":
            j += 1
        if j >= n or text[j] not in ",}":
            raise ParseError(f"expected ',' or '}}' after a quoted argument in '{text}'")
        return Arg(parts, quoted=True), j
    parts, j = _parse_parts(text, i, keep_escaped, stop=",}")
    return Arg(_strip(parts), quoted=False), j


def _parse_quoted(text: str, i: int, quote: str, keep_escaped: bool) -> tuple[Template, int]:
    parts: list[Part] = []
    buf: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            if buf:
                parts.append("".join(buf))
            return tuple(parts), i
        if text.startswith("\\${", i):
            buf.append("\\${" if keep_escaped else "${")
            i += 3
            continue
        if text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            node, i = _parse_interp(text, i + 2, keep_escaped)
            parts.append(node)
            continue
        buf.append(ch)
        i += 1
    raise ParseError(f"unclosed quote in '{text}'")


def _strip(parts: Template) -> Template:
    items = list(parts)
    if items and isinstance(items[0], str):
        items[0] = items[0].lstrip()
    if items and isinstance(items[-1], str):
        items[-1] = items[-1].rstrip()
    return tuple(p for p in items if p != "")


# ---------------------------------------------------------------------------------------------
# Resolving

_MISSING = object()


def static_parts(tree: Any) -> frozenset[int]:
    """Ids of the mappings and lists in `tree` that hold no interpolation at all.

    The per-job stage shares such parts with the base config instead of walking them again;
    the base stays alive for the whole compile, so these ids cannot be reused meanwhile.
    """
    found: set[int] = set()

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            clean = all([walk(v) for v in node.values()])
        elif isinstance(node, list):
            clean = all([walk(v) for v in node])
        else:
            return not (isinstance(node, str) and "$" in node)
        if clean:
            found.add(id(node))
        return clean

    walk(tree)
    return frozenset(found)


class Resolver:
    """Resolves one tree. Values are memoised per path; a cycle is an error naming its keys.

    `keep_escaped` names a top-level key (the sweep) whose `\\${` stays escaped.
    """

    def __init__(
        self,
        tree: dict[str, Any],
        origins: Mapping[Path_, Origin],
        env: Mapping[str, str],
        keep_escaped: str | None = None,
        static: frozenset[int] = frozenset(),
    ) -> None:
        self.tree = tree
        self.static = static
        self.origins = origins
        self.env = env
        self.keep_escaped = keep_escaped
        self._done: dict[Path_, Any] = {}
        self._active: list[Path_] = []
        # Where a value really came from when its key only points elsewhere (`name: ${a.b}`),
        # so that an invalid value is reported where it was written.
        self.derived: dict[Path_, Origin] = {}

    # -- public

    def resolve(self, path: Path_ = ()) -> Any:
        """The fully resolved value at `path` (a copy; the input tree is not changed)."""
        return self._value(path, self._node(path))

    def where(self, path: Path_) -> Origin | None:
        return origin_of(self.origins, path)

    # -- tree walking

    def _node(self, path: Path_) -> Any:
        node: Any = self.tree
        for depth, key in enumerate(path):
            node = self._child(node, key, path[:depth])
            if node is _MISSING:
                raise KeyError(path)
        return node

    def _child(self, node: Any, key: str | int, parent: Path_) -> Any:
        if isinstance(node, str) and has_interpolation(node):
            node = self._value(parent, node)
        if isinstance(node, dict):
            return node.get(key, _MISSING) if isinstance(key, str) else _MISSING
        if isinstance(node, list):
            index = int(key) if isinstance(key, int) or key.isdigit() else -1
            return node[index] if 0 <= index < len(node) else _MISSING
        return _MISSING

    def _value(self, path: Path_, node: Any) -> Any:
        if id(node) in self.static:
            return node  # shared with the base config: nothing inside it to resolve
        if isinstance(node, dict):
            return {k: self._value((*path, k), v) for k, v in node.items()}
        if isinstance(node, list):
            return [self._value((*path, i), v) for i, v in enumerate(node)]
        if not isinstance(node, str) or "$" not in node:
            return node
        if path in self._done:
            return self._done[path]
        if path in self._active:
            cycle = [*self._active[self._active.index(path) :], path]
            raise fail(
                "interpolation cycle: " + " -> ".join(_dotted(p) for p in cycle),
                origin_of(self.origins, path),
                key=_dotted(path),
            )
        self._active.append(path)
        try:
            keep = self.keep_escaped is not None and path[:1] == (self.keep_escaped,)
            try:
                template = parse(node, keep)
            except ParseError as exc:
                raise fail(exc.message, self._origin(path), key=_dotted(path)) from None
            value = self._render(template, path, keep)
        finally:
            self._active.pop()
        self._done[path] = value
        return value

    def _origin(self, path: Path_) -> Origin | None:
        return origin_of(self.origins, path)

    def _render(self, template: Template, path: Path_, keep: bool = False) -> Any:
        if len(template) == 1 and not isinstance(template[0], str):
            value = self._part(template[0], path)
            return _protect(value) if keep else value
        out = []
        for part in template:
            if isinstance(part, str):
                out.append(part)
            else:
                text = _text(self._part(part, path))
                out.append(_protect(text) if keep else text)
        return "".join(out)

    def _part(self, part: Part, path: Path_) -> Any:
        if isinstance(part, str):
            return part
        if isinstance(part, Key):
            return self._lookup(part, path)
        return self._call(part, path)

    def _target(self, key: Key, path: Path_) -> Path_:
        if key.up == 0:
            return key.parts
        base = path[: -key.up] if key.up <= len(path) else None
        if base is None:
            raise fail(
                f"'{key.text}' climbs above the top of the config",
                self._origin(path),
                key=_dotted(path),
            )
        return (*base, *key.parts)

    def _lookup(self, key: Key, path: Path_) -> Any:
        target = self._target(key, path)
        try:
            node = self._node(target)
        except KeyError:
            raise self._missing(key.text, target, path) from None
        value = self._value(target, node)
        if self._active and self._active[-1] == path and self._whole(path):
            source = self.derived.get(target) or self.origins.get(target)
            if source is not None:
                self.derived[path] = source
        return value

    def _whole(self, path: Path_) -> bool:
        node = self._done.get(path, _MISSING)
        if node is not _MISSING:
            return False
        try:
            raw = self._node(path)
        except KeyError:
            return False
        return isinstance(raw, str) and raw.startswith("${") and raw.count("${") == 1

    def _missing(self, text: str, target: Path_, path: Path_) -> ConfigError:
        parent: Any = self.tree
        known: list[str] = []
        for k in target[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            known = list(parent)
        return ConfigError(
            Problem(
                f"'{text}' refers to '{_dotted(target)}', which does not exist",
                self._origin(path),
                key=_dotted(path),
                hint=did_you_mean(str(target[-1]), known) if target else None,
            )
        )

    def _call(self, call: Call, path: Path_) -> Any:
        impl = RESOLVERS.get(call.name)
        if impl is None:
            raise fail(
                f"unknown resolver '{call.name}' in '{call.text}'",
                self._origin(path),
                key=_dotted(path),
                hint=did_you_mean(call.name, RESOLVERS),
            )
        if call.name == "oc.select":
            return self._select(call, path)
        args = [self._arg(a, path) for a in call.args]
        try:
            return impl(self, args)
        except ResolverError as exc:
            raise fail(
                f"{call.text}: {exc.message}",
                self._origin(path),
                key=_dotted(path),
                hint=exc.hint,
            ) from None

    def _select(self, call: Call, path: Path_) -> Any:
        # `oc.select` takes a key, not a value: a missing key gives the default.
        if not call.args or len(call.args) > 2:
            raise fail(
                f"{call.text}: takes a key and an optional default",
                self._origin(path),
                key=_dotted(path),
            )
        name = _text(self._arg(call.args[0], path))
        default = self._arg(call.args[1], path) if len(call.args) == 2 else None
        up = len(name) - len(name.lstrip("."))
        key = Key(up, tuple(_split_key(name[up:])), name)
        try:
            node = self._node(self._target(key, path))
        except KeyError:
            return default
        value = self._value(self._target(key, path), node)
        return default if value is None else value

    def _arg(self, arg: Arg, path: Path_) -> Any:
        if arg.quoted:
            return "".join(_text(self._part(p, path)) for p in arg.parts)
        if len(arg.parts) == 1 and not isinstance(arg.parts[0], str):
            return self._part(arg.parts[0], path)
        if all(isinstance(p, str) for p in arg.parts):
            return _primitive("".join(arg.parts))  # type: ignore[arg-type]
        return "".join(_text(self._part(p, path)) for p in arg.parts)


def _protect(value: Any) -> Any:
    """Under the sweep, a `${` that came out of a resolved value is data, not a template.

    The per-job stage turns an escaped `\\${` into a live `${`; text that resolution produced
    (an environment variable holding `${HOME}`, say) is escaped once more so it stays text.
    """
    if isinstance(value, str):
        return value.replace("${", "\\\\${")
    if isinstance(value, list):
        return [_protect(v) for v in value]
    if isinstance(value, dict):
        return {k: _protect(v) for k, v in value.items()}
    return value


def _primitive(text: str) -> Any:
    """Unquoted resolver arguments are typed as YAML would type them."""
    lowered = text.lower()
    if lowered in ("null", "~"):
        return None
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if _INT.fullmatch(text):
        return int(text.replace("_", ""))
    if _FLOAT.fullmatch(text) and any(c.isdigit() for c in text):
        return float(text.replace("_", ""))
    return text


def _text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


# ---------------------------------------------------------------------------------------------
# Resolvers


class ResolverError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)


def _env(r: Resolver, args: list[Any]) -> Any:
    if not 1 <= len(args) <= 2:
        raise ResolverError("takes a variable name and an optional default")
    name = _text(args[0])
    if name in r.env:
        return r.env[name]
    if len(args) == 2:
        return args[1]
    raise ResolverError(
        f"environment variable '{name}' is not set",
        hint=f"export {name}=... before compiling, or give a default: ${{oc.env:{name},default}}",
    )


def _eval(r: Resolver, args: list[Any]) -> Any:
    if len(args) != 1:
        raise ResolverError("takes one expression (quote it if it contains commas)")
    try:
        return evaluate(_text(args[0]))
    except ExpressionError as exc:
        raise ResolverError(exc.message) from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


def _if(r: Resolver, args: list[Any]) -> Any:
    if len(args) != 3:
        raise ResolverError("takes a condition, a value if true and a value if false")
    return args[1] if _truthy(args[0]) else args[2]


def _concat(r: Resolver, args: list[Any]) -> Any:
    if args and all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    return "".join(_text(a) for a in args)


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ResolverError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        parsed = _primitive(value.strip())
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            return parsed
    raise ResolverError(f"expected a number, got {value!r}")


def _numbers(args: list[Any], count: int | None = None) -> list[int | float]:
    if count is not None and len(args) != count:
        raise ResolverError(f"takes {count} numbers")
    if not args:
        raise ResolverError("takes at least one number")
    return [_number(a) for a in args]


def _mul(r: Resolver, args: list[Any]) -> Any:
    return float(math.prod(_numbers(args)))


def _muli(r: Resolver, args: list[Any]) -> Any:
    return int(math.prod(_numbers(args)))


def _add(r: Resolver, args: list[Any]) -> Any:
    return float(sum(_numbers(args)))


def _addi(r: Resolver, args: list[Any]) -> Any:
    return int(sum(_numbers(args)))


def _sub(r: Resolver, args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    return float(a - b)


def _subi(r: Resolver, args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    return int(a - b)


def _div(r: Resolver, args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise ResolverError("division by zero")
    return a / b


def _divi(r: Resolver, args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise ResolverError("division by zero")
    return int(a // b)


def _cdivi(r: Resolver, args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise ResolverError("division by zero")
    return int(-(-a // b))


def _int(r: Resolver, args: list[Any]) -> Any:
    (value,) = _numbers(args, 1)
    return int(value)


def _len(r: Resolver, args: list[Any]) -> Any:
    if len(args) != 1 or not isinstance(args[0], (list, dict, str)):
        raise ResolverError("takes one list, mapping or string")
    return len(args[0])


def _join(r: Resolver, args: list[Any]) -> Any:
    if len(args) != 2 or not isinstance(args[1], list):
        raise ResolverError("takes a separator and a list")
    return _text(args[0]).join(_text(v) for v in args[1])


RESOLVERS: dict[str, Callable[[Resolver, list[Any]], Any]] = {
    "oc.env": _env,
    "oc.select": lambda r, a: None,  # handled by Resolver._select (it takes a key)
    "oc.eval": _eval,
    "oc.if": _if,
    "oc.concat": _concat,
    "oc.mul": _mul,
    "oc.muli": _muli,
    "oc.add": _add,
    "oc.addi": _addi,
    "oc.sub": _sub,
    "oc.subi": _subi,
    "oc.div": _div,
    "oc.divi": _divi,
    "oc.cdivi": _cdivi,
    "oc.int": _int,
    "oc.len": _len,
    "oc.join": _join,
}
