"""Evaluate the safe expression language: the value of an expression `safeparse` has checked.

Owns the limits that keep a hostile config from hanging the compiler: sizes, exponents and
digits are checked before an operation is computed, and every result after.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any, TypeAlias

from .safeparse import (
    BINARY,
    COMPARE,
    FUNCTIONS,
    NAMED_CONSTANTS,
    Expression,
    ExpressionError,
    parse,
)

MAX_EXPONENT = 1000
# Items in one string, list or tuple (nested items included).
MAX_ITEMS = 100_000
# Items in all the strings, lists and tuples one expression builds: without it a short expression
# could build hundreds of maximal lists, and sizing them stays cheap because of it.
MAX_TOTAL_ITEMS = 1_000_000
# About 3000 decimal digits: below CPython's 4300-digit int<->str limit, so str() of any int works.
MAX_INT_BITS = 10_000
# Same number as CPython's own int<->str limit (3.11+); older Pythons parse long strings in
# quadratic time, so int() refuses them up front everywhere.
_MAX_INT_STRING = 4300
# round(n, -k) computes 10**k, so k needs the same bound as an exponent.
_MAX_ROUND_DIGITS = MAX_EXPONENT

_Sequence: TypeAlias = str | list[object] | tuple[object, ...]


def evaluate(expr: str) -> object:
    """The value of `expr`: an int, float, str, bool, None, or a list or tuple of those."""
    expression = parse(expr)
    evaluation = _Evaluation(expression)
    try:
        return evaluation.value_of(expression.tree)
    except RecursionError:
        # Only reachable when the caller's own stack is already deep.
        raise ExpressionError("expression is too deeply nested to evaluate here") from None


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _size(value: _Sequence) -> int:
    """How many items a sequence holds, counting the items of nested containers too.

    Repetition shares one inner list many times, so str() or == would walk it many times; this
    counts what they would walk.
    """
    if isinstance(value, str):
        return len(value)
    return sum(_weight(item) for item in value)


def _weight(item: object) -> int:
    # Big ints count per 64-bit word so that str() of a container stays proportionate.
    if isinstance(item, int):
        return 1 + item.bit_length() // 64
    if isinstance(item, (str, list, tuple)):
        return max(1, _size(item))
    return 1


class _Evaluation:
    """One expression's evaluation: how many items it has built so far."""

    def __init__(self, expression: Expression) -> None:
        # Errors point into the expression's text; bound here, no call in between.
        self.error: Callable[[str, ast.AST], ExpressionError] = expression.error
        self._built = 0

    def value_of(self, node: ast.expr) -> object:
        match node:
            case ast.Constant(value=value):
                return self._checked(value, node)
            case ast.Name(id=name):
                return NAMED_CONSTANTS[name]
            case ast.UnaryOp(op=op, operand=operand):
                return self._unary(op, self.value_of(operand), node)
            case ast.BinOp(left=left, op=op, right=right):
                return self._binary(op, self.value_of(left), self.value_of(right), node)
            case ast.BoolOp(op=op, values=[first, *rest]):
                # Python semantics: stop at the first operand that decides, and return it.
                result = self.value_of(first)
                for value_node in rest:
                    if bool(result) == isinstance(op, ast.Or):
                        break
                    result = self.value_of(value_node)
                return result
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                return self._compare(self.value_of(left), ops, comparators, node)
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return self.value_of(body if self.value_of(test) else orelse)
            case ast.List(elts=elts):
                return self._checked([self.value_of(elt) for elt in elts], node)
            case ast.Tuple(elts=elts):
                return self._checked(tuple(self.value_of(elt) for elt in elts), node)
            case ast.Subscript(value=value, slice=index):
                return self._subscript(self.value_of(value), index, node)
            case ast.Call(func=ast.Name(id=name), args=args):
                return self._call(name, [self.value_of(arg) for arg in args], node)
        raise self.error(f"{type(node).__name__} is not allowed", node)

    def _checked(self, value: object, node: ast.AST) -> object:
        if isinstance(value, complex):
            raise self.error("result is a complex number", node)
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise self.error(f"integer result is larger than {MAX_INT_BITS} bits", node)
        if isinstance(value, (str, list, tuple)):
            size = _size(value)
            if size > MAX_ITEMS:
                raise self.error(f"result has more than {MAX_ITEMS} items", node)
            self._built += size
            if self._built > MAX_TOTAL_ITEMS:
                message = f"expression builds more than {MAX_TOTAL_ITEMS} items in total"
                raise self.error(message, node)
        return value

    def _unary(self, op: ast.unaryop, operand: object, node: ast.expr) -> object:
        if isinstance(op, ast.Not):
            return not operand
        function: Callable[[Any], Any] = operator.neg if isinstance(op, ast.USub) else operator.pos
        try:
            result = function(operand)
        except TypeError:
            verb = "negate" if isinstance(op, ast.USub) else "apply unary '+' to"
            raise self.error(f"cannot {verb} {_type_name(operand)}", node) from None
        return self._checked(result, node)

    def _binary(self, op: ast.operator, a: object, b: object, node: ast.expr) -> object:
        function, template = BINARY[type(op)]
        self._check_binary(op, a, b, node)
        try:
            result = function(a, b)
        except ZeroDivisionError:
            zero_power = isinstance(op, ast.Pow)
            message = (
                "zero cannot be raised to a negative power" if zero_power else "division by zero"
            )
            raise self.error(message, node) from None
        except OverflowError:
            raise self.error("numeric result is too large", node) from None
        except (TypeError, ValueError):
            raise self.error(template.format(a=_type_name(a), b=_type_name(b)), node) from None
        return self._checked(result, node)

    def _check_binary(self, op: ast.operator, a: object, b: object, node: ast.expr) -> None:
        """Refuse operations whose result would be too big, before computing it."""
        size: int | None = None
        if isinstance(op, ast.Pow):
            self._check_power(a, b, node)
        elif isinstance(op, ast.Mod) and isinstance(a, str):
            # printf-style formatting takes field widths from data, e.g. '%*d' % (10**9, 1).
            raise self.error("'%' formatting of strings is not allowed", node)
        elif isinstance(op, ast.Mult):
            size = self._repeat_size(a, b)
            if size is None:
                size = self._repeat_size(b, a)
        elif isinstance(op, ast.Add) and isinstance(a, (str, list, tuple)) and type(a) is type(b):
            size = _size(a) + _size(b)
        if size is not None and size > MAX_ITEMS:
            raise self.error(f"result would have more than {MAX_ITEMS} items", node)

    def _check_power(self, base: object, exponent: object, node: ast.expr) -> None:
        if not isinstance(exponent, (int, float)) or not isinstance(base, (int, float)):
            return
        if abs(exponent) > MAX_EXPONENT:
            raise self.error(f"exponent is larger than {MAX_EXPONENT}", node)
        # Estimate before computing: the power itself is what would hang.
        if (
            isinstance(base, int)
            and isinstance(exponent, int)
            and base.bit_length() * exponent > MAX_INT_BITS
        ):
            raise self.error(f"integer result would be larger than {MAX_INT_BITS} bits", node)

    @staticmethod
    def _repeat_size(sequence: object, count: object) -> int | None:
        if not isinstance(sequence, (str, list, tuple)) or not isinstance(count, int):
            return None
        return _size(sequence) * count if count > 0 and sequence else 0

    def _compare(
        self, left: object, ops: list[ast.cmpop], comparators: list[ast.expr], node: ast.expr
    ) -> object:
        result: object = True
        for op, right_node in zip(ops, comparators, strict=True):
            right = self.value_of(right_node)
            function, symbol = COMPARE[type(op)]
            try:
                result = function(left, right)
            except TypeError:
                a, b = _type_name(left), _type_name(right)
                if symbol in ("in", "not in"):
                    raise self.error(f"cannot test whether {a} is in {b}", node) from None
                raise self.error(f"cannot compare {a} and {b} with '{symbol}'", node) from None
            if not result:
                return result
            left = right
        return result

    def _subscript(self, container: object, index: ast.expr, node: ast.expr) -> object:
        if not isinstance(container, (str, list, tuple)):
            raise self.error(f"cannot index {_type_name(container)}", node)
        if not isinstance(index, ast.Slice):
            position = self.value_of(index)
            if not isinstance(position, int):
                raise self.error(f"indices must be integers, not {_type_name(position)}", index)
            try:
                return container[position]
            except IndexError:
                kind = _type_name(container)
                message = f"index out of range for a {kind} of length {len(container)}"
                raise self.error(message, index) from None
        bounds: list[int | None] = []
        for part in (index.lower, index.upper, index.step):
            bound = None if part is None else self.value_of(part)
            if bound is not None and not isinstance(bound, int):
                raise self.error(f"slice bounds must be integers, not {_type_name(bound)}", index)
            bounds.append(bound)
        if bounds[2] == 0:
            raise self.error("slice step cannot be zero", index)
        return self._checked(container[slice(*bounds)], index)

    def _call(self, name: str, args: list[object], node: ast.expr) -> object:
        if name == "int" and args and isinstance(args[0], str) and len(args[0]) > _MAX_INT_STRING:
            raise self.error(f"int(): string is longer than {_MAX_INT_STRING} characters", node)
        ndigits = args[1] if name == "round" and len(args) == 2 else None
        if isinstance(ndigits, int) and abs(ndigits) > _MAX_ROUND_DIGITS:
            raise self.error(f"round(): ndigits is larger than {_MAX_ROUND_DIGITS}", node)
        try:
            result = FUNCTIONS[name](*args)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:
            raise self.error(f"{name}(): {exc}", node) from None
        return self._checked(result, node)
