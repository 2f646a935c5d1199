"""The grammar of the safe expression language (`${oc.eval:'...'}`, sweep `filter:` expressions).

Parses the text with `ast` and refuses every construct outside a small subset of Python
expressions before anything runs (user text never reaches `eval`); `ExpressionError` points at
the offending character. `safeeval` computes the value of what passes.
"""

from __future__ import annotations

import ast
import operator
import re
import warnings
from collections.abc import Callable
from typing import Any

MAX_LENGTH = 10_000
MAX_DEPTH = 100

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "bool": bool,
    "float": float,
    "int": int,
    "len": len,
    "max": max,
    "min": min,
    "round": round,
    "str": str,
}
"""The functions an expression may call, by name."""
_ALLOWED_FUNCTIONS = ", ".join(sorted(FUNCTIONS))

# YAML users write `true`/`false`/`null`; Python's spellings are parsed as constants already.
NAMED_CONSTANTS: dict[str, bool | None] = {"true": True, "false": False, "null": None}
"""The names an expression may use, with their values."""

BINARY: dict[type[ast.operator], tuple[Callable[[Any, Any], Any], str]] = {
    ast.Add: (operator.add, "cannot add {a} and {b}"),
    ast.Sub: (operator.sub, "cannot subtract {b} from {a}"),
    ast.Mult: (operator.mul, "cannot multiply {a} by {b}"),
    ast.Div: (operator.truediv, "cannot divide {a} by {b}"),
    ast.FloorDiv: (operator.floordiv, "cannot floor-divide {a} by {b}"),
    ast.Mod: (operator.mod, "cannot take {a} modulo {b}"),
    ast.Pow: (operator.pow, "cannot raise {a} to the power of {b}"),
}
"""The arithmetic operators allowed, each with its function and the message when it fails."""

COMPARE: dict[type[ast.cmpop], tuple[Callable[[Any, Any], Any], str]] = {
    ast.Eq: (operator.eq, "=="),
    ast.NotEq: (operator.ne, "!="),
    ast.Lt: (operator.lt, "<"),
    ast.LtE: (operator.le, "<="),
    ast.Gt: (operator.gt, ">"),
    ast.GtE: (operator.ge, ">="),
    ast.In: (lambda a, b: a in b, "in"),
    ast.NotIn: (lambda a, b: a not in b, "not in"),
}
"""The comparisons allowed, each with its function and its symbol."""

_UNARY = (ast.USub, ast.UAdd, ast.Not)

_SYMBOLS: dict[type[ast.AST], str] = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Is: "is",
    ast.IsNot: "is not",
}

_REJECTED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Lambda: "lambda is not allowed",
    **dict.fromkeys(
        (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
        "comprehensions are not allowed",
    ),
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Starred: "unpacking with '*' is not allowed",
    ast.Await: "'await' is not allowed",
    ast.Slice: "multi-dimensional subscripts are not allowed",
}

_NEWLINE = re.compile(r"\r\n|\r|\n")


class ExpressionError(Exception):
    """A rejected or failed expression; `offset` is a 0-based character index into it, if known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def parse(expr: str) -> Expression:
    """`expr` parsed, every construct in it allowed; an `ExpressionError` otherwise."""
    if len(expr) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    # Python's parser rejects leading indentation, which YAML quoting easily introduces.
    body = expr.strip()
    lead = len(expr) - len(expr.lstrip())
    if "\0" in body:
        raise ExpressionError("expression contains a null character", lead + body.index("\0"))
    try:
        # The parser warns on stderr about odd input such as `1if`; the user gets our error instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        offset = _syntax_offset(body, exc)
        raise ExpressionError(
            f"syntax error: {exc.msg}", None if offset is None else lead + offset
        ) from None
    except UnicodeEncodeError as exc:
        raise ExpressionError(
            "expression contains an invalid character", lead + exc.start
        ) from None
    except ValueError as exc:
        raise ExpressionError(f"syntax error: {exc}") from None
    except (RecursionError, MemoryError):
        # CPython's parser has its own nesting limits, reported as these two.
        raise ExpressionError(f"expression is nested deeper than {MAX_DEPTH} levels") from None
    expression = Expression(tree.body, body, lead)
    expression.check()
    return expression


class Expression:
    """One parsed expression: its tree, and its text, for error offsets."""

    def __init__(self, tree: ast.expr, body: str, lead: int) -> None:
        self.tree = tree
        self._body = body
        self._lead = lead
        self._starts = _line_starts(body)

    def error(self, message: str, node: ast.AST) -> ExpressionError:
        """An `ExpressionError` pointing at `node`'s first character in the text as written."""
        lineno: int | None = getattr(node, "lineno", None)
        col: int | None = getattr(node, "col_offset", None)
        if lineno is None or col is None or not 1 <= lineno <= len(self._starts):
            return ExpressionError(message)
        start = self._starts[lineno - 1]
        line = self._body[start:]
        chars = len(line.encode("utf-8")[:col].decode("utf-8", "ignore"))
        return ExpressionError(message, self._lead + start + chars)

    def check(self) -> None:
        """Reject every disallowed construct and too deep nesting up front.

        Branches that would not run are checked too, so whether a config is valid never depends
        on the values it happens to hold.
        """
        stack: list[tuple[ast.expr, int]] = [(self.tree, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise self.error(f"expression is nested deeper than {MAX_DEPTH} levels", node)
            children = self._check_node(node)
            # Reversed, so the leftmost problem is the one reported.
            stack.extend((child, depth + 1) for child in reversed(children))

    def _check_node(self, node: ast.expr) -> list[ast.expr]:
        match node:
            case ast.Constant(value=value):
                if value is None or type(value) in (bool, int, float, str):
                    return []
                kinds = {complex: "complex numbers", bytes: "bytes literals"}
                what = kinds.get(type(value))
                message = f"{what} are not allowed" if what else f"{value!r} is not allowed"
                raise self.error(message, node)
            case ast.Name(id=name):
                if name in NAMED_CONSTANTS:
                    return []
                hint = " (functions must be called)" if name in FUNCTIONS else ""
                raise self.error(f"name '{name}' is not allowed{hint}", node)
            case ast.UnaryOp(op=op) | ast.BinOp(op=op) if not isinstance(op, (*_UNARY, *BINARY)):
                raise self.error(f"operator '{_SYMBOLS.get(type(op), '?')}' is not allowed", node)
            case ast.Compare(ops=ops):
                for comparison in ops:
                    if type(comparison) not in COMPARE:
                        symbol = _SYMBOLS.get(type(comparison), "?")
                        raise self.error(f"operator '{symbol}' is not allowed", node)
            case ast.Call(func=func, keywords=keywords):
                if not isinstance(func, ast.Name):
                    other = f"only these functions can be called: {_ALLOWED_FUNCTIONS}"
                    raise self.error(_REJECTED.get(type(func), other), func)
                if func.id not in FUNCTIONS:
                    raise self.error(
                        f"function '{func.id}' is not allowed (allowed: {_ALLOWED_FUNCTIONS})", func
                    )
                if keywords:
                    raise self.error("keyword arguments are not allowed", keywords[0])
                return list(node.args)
            case ast.Subscript(value=value, slice=ast.Slice(lower=lower, upper=upper, step=step)):
                return [value, *(part for part in (lower, upper, step) if part is not None)]
            case (
                ast.UnaryOp()
                | ast.BinOp()
                | ast.BoolOp()
                | ast.IfExp()
                | ast.List()
                | ast.Tuple()
                | ast.Subscript()
            ):
                pass
            case _:
                message = _REJECTED.get(type(node), f"{type(node).__name__} is not allowed")
                raise self.error(message, node)
        return [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]


def _line_starts(text: str) -> list[int]:
    return [0, *(match.end() for match in _NEWLINE.finditer(text))]


def _syntax_offset(body: str, exc: SyntaxError) -> int | None:
    # SyntaxError columns are 1-based characters (ast node columns are UTF-8 bytes).
    if exc.lineno is None or exc.offset is None or exc.offset < 1:
        return None
    starts = _line_starts(body)
    if not 1 <= exc.lineno <= len(starts):
        return None
    return min(starts[exc.lineno - 1] + exc.offset - 1, len(body))
