"""The resolvers of `${name:args}` interpolations: `oc.env`, `oc.eval`, `oc.if`, the
arithmetic helpers the predecessor's configs use, and their argument typing.

Every resolver takes the environment and its evaluated arguments; a bad argument raises
`ResolverError`, which the resolver turns into a positioned config error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from .guard import unencodable
from .safeeval import ExpressionError, evaluate

_INT = re.compile(r"[-+]?[0-9][0-9_]*")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def primitive(text: str) -> Any:
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


def text_of(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


class ResolverError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)


def _env(env: Mapping[str, str], args: list[Any]) -> Any:
    if not 1 <= len(args) <= 2:
        raise ResolverError("takes a variable name and an optional default")
    name = text_of(args[0])
    if name in env:
        if unencodable(env[name]):
            # Python keeps bytes that are not UTF-8 as lone surrogates; a script cannot hold them.
            raise ResolverError(
                f"environment variable '{name}' is not valid UTF-8",
                hint=f"export {name} as UTF-8 text",
            )
        return env[name]
    if len(args) == 2:
        return args[1]
    raise ResolverError(
        f"environment variable '{name}' is not set",
        hint=f"export {name}=... before compiling, or give a default: ${{oc.env:{name},default}}",
    )


def _eval(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 1:
        raise ResolverError("takes one expression (quote it if it contains commas)")
    try:
        return evaluate(text_of(args[0]))
    except ExpressionError as exc:
        raise ResolverError(exc.message) from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


def _if(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 3:
        raise ResolverError("takes a condition, a value if true and a value if false")
    return args[1] if _truthy(args[0]) else args[2]


def _concat(env: Mapping[str, str], args: list[Any]) -> Any:
    if args and all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    return "".join(text_of(a) for a in args)


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ResolverError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        parsed = primitive(value.strip())
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            return parsed
    raise ResolverError(f"expected a number, got {value!r}")


def _numbers(args: list[Any], count: int | None = None) -> list[int | float]:
    if count is not None and len(args) != count:
        raise ResolverError(f"takes {count} numbers")
    if not args:
        raise ResolverError("takes at least one number")
    return [_number(a) for a in args]


def _mul(env: Mapping[str, str], args: list[Any]) -> Any:
    return float(math.prod(_numbers(args)))


def _muli(env: Mapping[str, str], args: list[Any]) -> Any:
    return int(math.prod(_numbers(args)))


def _add(env: Mapping[str, str], args: list[Any]) -> Any:
    return float(sum(_numbers(args)))


def _addi(env: Mapping[str, str], args: list[Any]) -> Any:
    return int(sum(_numbers(args)))


def _sub(env: Mapping[str, str], args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    return float(a - b)


def _subi(env: Mapping[str, str], args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    return int(a - b)


def _div(env: Mapping[str, str], args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise ResolverError("division by zero")
    return a / b


def _divi(env: Mapping[str, str], args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise ResolverError("division by zero")
    return int(a // b)


def _cdivi(env: Mapping[str, str], args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise ResolverError("division by zero")
    return int(-(-a // b))


def _int(env: Mapping[str, str], args: list[Any]) -> Any:
    (value,) = _numbers(args, 1)
    return int(value)


def _len(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 1 or not isinstance(args[0], (list, dict, str)):
        raise ResolverError("takes one list, mapping or string")
    return len(args[0])


def _join(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 2 or not isinstance(args[1], list):
        raise ResolverError("takes a separator and a list")
    return text_of(args[0]).join(text_of(v) for v in args[1])


RESOLVERS: dict[str, Callable[[Mapping[str, str], list[Any]], Any]] = {
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
