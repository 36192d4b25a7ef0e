"""The ``calculator`` tool: arithmetic on numbers, evaluated by walking Python's ``ast``.

``eval`` is never used: only number literals, ``+ - * / // % **``, unary ``+``/``-`` and
parentheses are accepted, so a policy cannot reach names, calls or attributes. Sizes are
bounded (expression length, exponent, digits of the result) so that ``9**9**9`` is an error
message, not a hung rollout.
"""
from __future__ import annotations

import ast
import math
import operator

MAX_EXPRESSION_CHARS = 1000
MAX_EXPONENT = 10_000
MAX_RESULT_BITS = 4096       # about 1233 decimal digits

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_SYMBOLS = {ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@",
            ast.Invert: "~", ast.Not: "not"}
_ALLOWED = "numbers, + - * / // % ** and parentheses"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: numbers with + - * / // % ** and parentheses, e.g. "(12 + 30) * 2".
    """
    if not isinstance(expression, str):
        raise ValueError("expression must be a string such as \"(12 + 30) * 2\"")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        raise ValueError(f"not a valid arithmetic expression: {expression.strip()!r} (use {_ALLOWED})") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except (OverflowError, RecursionError):
        raise ValueError("the result is too large") from None
    return format_number(value)


def format_number(value: int | float) -> str:
    """Integers (and floats with an integral value below 1e16) without ``.0``; other floats
    in Python's shortest round-tripping form."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    return str(value)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ValueError(f"only numbers are allowed, not {node.value!r}")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ValueError(f"operator {_SYMBOLS.get(type(node.op), type(node.op).__name__)} is not supported "
                             f"(use {_ALLOWED})")
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op not in _BINARY:
            hint = " (use ** for powers)" if op is ast.BitXor else f" (use {_ALLOWED})"
            raise ValueError(f"operator {_SYMBOLS.get(op, op.__name__)} is not supported{hint}")
        left, right = _eval(node.left), _eval(node.right)
        if op is ast.Pow:
            _check_power(left, right)
        return _check_size(_BINARY[op](left, right))
    if isinstance(node, ast.Name):
        raise ValueError(f"names such as {node.id!r} are not allowed (use {_ALLOWED})")
    if isinstance(node, ast.Call):
        raise ValueError(f"function calls are not allowed (use {_ALLOWED})")
    raise ValueError(f"{type(node).__name__} is not allowed (use {_ALLOWED})")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponent {format_number(exponent)} is too large (at most {MAX_EXPONENT})")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if abs(base) > 1 and (abs(base).bit_length() - 1) * exponent > MAX_RESULT_BITS:
            raise ValueError("the result is too large")
    if isinstance(base, complex) or (base < 0 and isinstance(exponent, float) and not exponent.is_integer()):
        raise ValueError("a negative number to a fractional power is not a real number")


def _check_size(value: int | float) -> int | float:
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ValueError("the result is too large")
    return value
