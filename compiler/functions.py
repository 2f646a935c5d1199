"""The functions of `${name:args}` interpolations: `oc.env`, `oc.decode`, `oc.eval`, `oc.if`,
the helpers the predecessor's configs use (arithmetic, `oc.slurmtime`, `oc.pad_iter`,
`oc.split`, `oc.slice`, `oc.sqrt`, `oc.timestring`, `oc.exclude_nodes`), and their argument
typing.

Every function takes the environment and its evaluated arguments; a bad argument raises
`FunctionError`, which the interpolator turns into a positioned config error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .grammar import GrammarError, decode
from .guard import unencodable
from .safeeval import evaluate
from .safeparse import ExpressionError

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


class FunctionError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)


# Resolvers whose unquoted literal arguments arrive as the text written, not typed.
TEXT_ARGUMENTS = frozenset({"oc.env"})


def _env(env: Mapping[str, str], args: list[Any]) -> Any:
    """OmegaConf's `oc.env` (2.1+): the variable's text when set; else the default as text
    (`${oc.env:N,5}` gives "5" either way), except that a null default stays null."""
    if not 1 <= len(args) <= 2:
        raise FunctionError("takes a variable name and an optional default")
    name = text_of(args[0])
    if name in env:
        if unencodable(env[name]):
            # Python keeps bytes that are not UTF-8 as lone surrogates; a script cannot hold them.
            raise FunctionError(
                f"environment variable '{name}' is not valid UTF-8",
                hint=f"export {name} as UTF-8 text",
            )
        return env[name]
    if len(args) == 2:
        default = args[1]
        if default is None or isinstance(default, str):
            return default
        if isinstance(default, (list, dict)):
            raise FunctionError(
                "the default must be text or null",
                hint=f"for a list, decode text: ${{oc.decode:${{oc.env:{name},'[a, b]'}}}}",
            )
        return text_of(default).lower() if isinstance(default, bool) else text_of(default)
    raise FunctionError(
        f"environment variable '{name}' is not set",
        hint=f"export {name}=... before compiling, or give a default: ${{oc.env:{name},default}}",
    )


def _decode(env: Mapping[str, str], args: list[Any]) -> Any:
    """OmegaConf's `oc.decode`: text read as a value (int, float, bool, null, list, dict)."""
    if len(args) != 1:
        raise FunctionError("takes one string")
    (value,) = args
    if not isinstance(value, str):
        return value  # null stays null; an already typed value has nothing to decode
    try:
        decoded = decode(value)
    except GrammarError as exc:
        raise FunctionError(f"cannot decode {value!r}: {exc.message}", hint=exc.hint) from None
    if _holds_interpolation(decoded):
        raise FunctionError(
            f"cannot decode {value!r}: it holds an interpolation, which oc.decode does not resolve"
        )
    return decoded


def _holds_interpolation(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, list):
        return any(_holds_interpolation(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_interpolation(v) for v in value.values())
    return False


def _eval(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 1:
        raise FunctionError("takes one expression (quote it if it contains commas)")
    try:
        return evaluate(text_of(args[0]))
    except ExpressionError as exc:
        raise FunctionError(exc.message) from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


def _if(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 3:
        raise FunctionError("takes a condition, a value if true and a value if false")
    return args[1] if _truthy(args[0]) else args[2]


def _concat(env: Mapping[str, str], args: list[Any]) -> Any:
    if args and all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    return "".join(text_of(a) for a in args)


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise FunctionError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        parsed = primitive(value.strip())
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            return parsed
    raise FunctionError(f"expected a number, got {value!r}")


def _numbers(args: list[Any], count: int | None = None) -> list[int | float]:
    if count is not None and len(args) != count:
        raise FunctionError(f"takes {count} numbers")
    if not args:
        raise FunctionError("takes at least one number")
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
        raise FunctionError("division by zero")
    return a / b


def _divi(env: Mapping[str, str], args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise FunctionError("division by zero")
    return int(a // b)


def _cdivi(env: Mapping[str, str], args: list[Any]) -> Any:
    a, b = _numbers(args, 2)
    if b == 0:
        raise FunctionError("division by zero")
    return int(-(-a // b))


def _int(env: Mapping[str, str], args: list[Any]) -> Any:
    (value,) = _numbers(args, 1)
    return int(value)


def _len(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 1 or not isinstance(args[0], (list, dict, str)):
        raise FunctionError("takes one list, mapping or string")
    return len(args[0])


def _join(env: Mapping[str, str], args: list[Any]) -> Any:
    if len(args) != 2 or not isinstance(args[1], list):
        raise FunctionError("takes a separator and a list")
    return text_of(args[0]).join(text_of(v) for v in args[1])


def _sqrt(env: Mapping[str, str], args: list[Any]) -> Any:
    (value,) = _numbers(args, 1)
    if value < 0:
        raise FunctionError(f"the square root of a negative number ({value!r})")
    return math.sqrt(value)


def _slurmtime(env: Mapping[str, str], args: list[Any]) -> Any:
    """Seconds as SLURM's `days-hours:minutes:seconds`, not zero-padded (the predecessor's
    form: 3600 -> `0-1:0:0`), which sbatch's --time reads."""
    (value,) = _numbers(args, 1)
    if value < 0 or value != int(value):
        raise FunctionError(f"expected a whole number of seconds, got {value!r}")
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}-{hours}:{minutes}:{seconds}"


def _pad_iter(env: Mapping[str, str], args: list[Any]) -> Any:
    """Megatron's checkpoint folder name of an iteration: 1000 -> `iter_0001000`."""
    (value,) = _numbers(args, 1)
    if value < 0 or value != int(value):
        raise FunctionError(f"expected an iteration number, got {value!r}")
    return f"iter_{int(value):07d}"


def _split(env: Mapping[str, str], args: list[Any]) -> Any:
    if not 1 <= len(args) <= 2 or not isinstance(args[0], str):
        raise FunctionError("takes a string and an optional separator (default: white space)")
    separator = text_of(args[1]) if len(args) == 2 and args[1] is not None else None
    if separator == "":
        raise FunctionError("the separator cannot be empty")
    return args[0].split(separator)


def _slice(env: Mapping[str, str], args: list[Any]) -> Any:
    """`value[start:end]` of a string or list; a null bound is open."""
    if not 2 <= len(args) <= 3 or not isinstance(args[0], (str, list)):
        raise FunctionError("takes a string or list, a start and an optional end")
    bounds: list[int | None] = []
    for bound in args[1:]:
        if bound is None:
            bounds.append(None)
            continue
        number = _number(bound)
        if number != int(number):
            raise FunctionError(f"expected a whole number, got {bound!r}")
        bounds.append(int(number))
    start, end = bounds[0], bounds[1] if len(bounds) == 2 else None
    return args[0][start:end]


def _timestring(env: Mapping[str, str], args: list[Any]) -> Any:
    """The predecessor's UTC `YYYYmmdd_HHMMSS_mmm`, from SOURCE_DATE_EPOCH only: a bundle
    never depends on when it was compiled (two compiles give the same bytes, and the
    reconciler knows jobs by name), so the time must be given on purpose."""
    if args:
        raise FunctionError("takes no arguments: ${oc.timestring:}")
    raw = env.get("SOURCE_DATE_EPOCH")
    if raw is None:
        raise FunctionError(
            "the time of the compile would make every compile a different bundle",
            hint="set SOURCE_DATE_EPOCH (seconds since 1970, e.g. "
            "SOURCE_DATE_EPOCH=$(date +%s)) to stamp a compile on purpose, or name jobs "
            "without the time",
        )
    try:
        stamp = datetime.fromtimestamp(int(raw), tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise FunctionError(f"SOURCE_DATE_EPOCH={raw!r} is not a number of seconds") from None
    return stamp.strftime("%Y%m%d_%H%M%S_") + f"{stamp.microsecond // 1000:03d}"


def _exclude_nodes(env: Mapping[str, str], args: list[Any]) -> Any:
    """The nodes listed in a file, for `--exclude`: one or more per line (comma or space
    separated), `#` starts a comment, repeats dropped; null when the file is missing or
    empty, which drops the directive. The file is read at compile time."""
    if len(args) != 1 or not isinstance(args[0], str):
        raise FunctionError("takes the path of a node list file")
    path = Path(args[0])
    if not path.is_absolute():
        raise FunctionError(
            f"'{path}' is relative: it would depend on where the compile runs",
            hint="give an absolute path, e.g. ${oc.env:HOME}/exclude_nodes.txt",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise FunctionError(f"cannot read '{path}': {exc}") from None
    nodes: dict[str, None] = {}
    for line in text.splitlines():
        for node in re.split(r"[\s,]+", line.partition("#")[0]):
            if node:
                nodes[node] = None
    return ",".join(nodes) or None


FUNCTIONS: dict[str, Callable[[Mapping[str, str], list[Any]], Any]] = {
    "oc.env": _env,
    "oc.decode": _decode,
    "oc.select": lambda r, a: None,  # handled by Interpolator._select (it takes a key)
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
    "oc.sqrt": _sqrt,
    "oc.slurmtime": _slurmtime,
    "oc.pad_iter": _pad_iter,
    "oc.split": _split,
    "oc.slice": _slice,
    "oc.timestring": _timestring,
    "oc.exclude_nodes": _exclude_nodes,
}
