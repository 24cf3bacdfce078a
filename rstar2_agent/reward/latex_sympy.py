"""A small, safe LaTeX -> sympy reader for single scalar answers, and symbolic equality.

Only a whitelisted subset is read: numbers, single-letter variables, ``+ - * / ^``, parentheses,
``\\frac``, ``\\sqrt``, ``\\pi``, ``\\infty``, ``\\cdot``/``\\times`` and common functions. Anything else
returns None, so the caller falls back to string comparison (and math-verify).

Why a whitelist: sympy's ``parse_expr`` evaluates Python code, and model output is untrusted. After
conversion only digits, letters from an allow-list, operators, parentheses and decimal points can
reach it. Why a size guard: ``9^{9^{9}}`` would make sympy build a number with 370 million digits;
answers whose exact value would need more than 10,000 digits are refused before evaluation (the
pool's hard timeout covers what remains).
"""

from __future__ import annotations

import math
import re
import string

import sympy
from sympy.parsing.sympy_parser import (
    implicit_application,
    implicit_multiplication,
    parse_expr,
    rationalize,
    standard_transformations,
)

from rstar2_agent.reward.extract import matching_brace
from rstar2_agent.reward.timeouts import SoftTimeout, soft_time_limit

__all__ = [
    "latex_to_sympy_text",
    "parse_unevaluated",
    "estimated_digits",
    "power_is_too_big",
    "is_astronomical",
    "parse_scalar",
    "symbolic_equal",
]

_FUNCTIONS = {
    "sqrt": sympy.sqrt, "log": sympy.log, "exp": sympy.exp,
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec, "csc": sympy.csc,
    "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan,
}
_CONSTANTS = {"pi": sympy.pi, "oo": sympy.oo}
_LOCALS = {**{c: sympy.Symbol(c) for c in string.ascii_letters}, **_FUNCTIONS, **_CONSTANTS}
_ALLOWED_NAMES = frozenset(_FUNCTIONS) | frozenset(_CONSTANTS)
_COMMAND_WORDS = {
    "pi": " pi ", "infty": " oo ", "cdot": "*", "times": "*", "ast": "*", "div": "/",
    "ln": " log", "log": " log", "exp": " exp", "sin": " sin", "cos": " cos", "tan": " tan",
    "cot": " cot", "sec": " sec", "csc": " csc", "arcsin": " asin", "arccos": " acos", "arctan": " atan",
}
_TRANSFORMS = standard_transformations + (rationalize, implicit_multiplication, implicit_application)
_SAFE_CHARS_RE = re.compile(r"^[0-9a-zA-Z+\-*/(). ]*$")
_MAX_DIGITS = 10_000  # exact values longer than this are not evaluated
_MAX_LENGTH = 400


def _replace_group_command(text: str, command: str, n_args: int, render) -> str | None:
    """Replace ``\\command{a}{b}`` (``n_args`` braced arguments) by ``render(a, b)``; None if malformed."""
    pattern = re.compile(r"\\" + command + r"(?![a-zA-Z])")
    while True:
        match = pattern.search(text)
        if match is None:
            return text
        cursor, args = match.end(), []
        for _ in range(n_args):
            if cursor >= len(text) or text[cursor] != "{":
                return None
            close = matching_brace(text, cursor)
            if close is None:
                return None
            args.append(text[cursor + 1 : close])
            cursor = close + 1
        text = text[: match.start()] + render(*args) + text[cursor:]


def _replace_nth_roots(text: str) -> str | None:
    """``\\sqrt[n]{a}`` -> ``((a)**(1/(n)))``."""
    while True:
        match = re.search(r"\\sqrt\[([^\[\]]+)\]\{", text)
        if match is None:
            return text
        close = matching_brace(text, match.end() - 1)
        if close is None:
            return None
        radicand = text[match.end() : close]
        text = text[: match.start()] + f"(({radicand})**(1/({match.group(1)})))" + text[close + 1 :]


def _replace_powers(text: str) -> str:
    """``^{a}`` -> ``**(a)`` and ``^a`` -> ``**a`` (one character)."""
    text = re.sub(r"\^\s*\{", "**{", text)
    return re.sub(r"\^\s*([0-9a-zA-Z])", r"**\1", text)


def _split_letter_runs(text: str) -> str | None:
    """Keep allowed names (``sqrt``, ``pi``); split other letter runs into products (``xy`` -> ``x*y``)."""

    def split(match: re.Match) -> str:
        word = match.group(0)
        return word if word in _ALLOWED_NAMES else "*".join(word)

    return re.sub(r"[a-zA-Z]+", split, text)


def latex_to_sympy_text(latex: str) -> str | None:
    """Convert a normalised LaTeX scalar to sympy input text, or None if unsupported/unsafe.

    >>> latex_to_sympy_text(r"\\frac{\\sqrt{2}}{2}")
    '((sqrt(2))/(2))'
    >>> latex_to_sympy_text(r"2^{10}xy")
    '2**(10)x*y'
    >>> latex_to_sympy_text("__import__") is None
    True
    """
    if len(latex) > _MAX_LENGTH:
        return None
    text = _replace_group_command(latex, "frac", 2, lambda a, b: f"(({a})/({b}))")
    text = text and _replace_nth_roots(text)
    text = text and _replace_group_command(text, "sqrt", 1, lambda a: f"sqrt({a})")
    if text is None:
        return None
    text = _replace_powers(text)
    text = re.sub(r"\\([a-zA-Z]+)", lambda m: _COMMAND_WORDS.get(m.group(1), "\\" + m.group(1)), text)
    text = text.replace("{", "(").replace("}", ")")
    if not _SAFE_CHARS_RE.match(text) or re.search(r"(?<!\d)\.|\.(?!\d)", text):
        return None
    return _split_letter_runs(text).strip()


def _integer_digits(n: int) -> float:
    """Decimal digits of ``|n|`` (0 for -1, 0 and 1, whose powers stay small)."""
    return 0.0 if abs(n) <= 1 else math.log10(abs(n))


def estimated_digits(expr: sympy.Basic) -> float:
    """Upper estimate of the digits sympy needs for the exact value of an unevaluated ``expr``.

    Powers multiply their base's digits by the exponent, so towers are measured without being
    computed; ``inf`` means astronomically large.

    >>> round(estimated_digits(sympy.parse_expr("2**1000", evaluate=False)))
    301
    >>> estimated_digits(sympy.parse_expr("9**(9**(9**9))", evaluate=False))
    inf
    """
    if expr.is_Rational:
        return max(_integer_digits(expr.p), _integer_digits(expr.q))
    if expr.is_Number:
        return 20.0  # a float literal
    if not expr.args:
        return 1.0  # a symbol or a constant such as pi
    if isinstance(expr, sympy.Pow) and not expr.exp.free_symbols:
        base = estimated_digits(expr.base)
        if base == 0:
            return 0.0
        if estimated_digits(expr.exp) > 15:
            return math.inf
        try:
            return base * abs(float(expr.exp))
        except (TypeError, ValueError, OverflowError):
            return math.inf
    return sum(estimated_digits(arg) for arg in expr.args)


def power_is_too_big(expr: sympy.Basic) -> bool:
    """True if evaluating ``expr`` (parsed unevaluated) would build a number over 10,000 digits.

    >>> power_is_too_big(sympy.parse_expr("9**(9**9)", evaluate=False))
    True
    >>> power_is_too_big(sympy.parse_expr("x**2 + 2**(2**2) + 2**1001", evaluate=False))
    False
    """
    return estimated_digits(expr) > _MAX_DIGITS


def parse_unevaluated(latex: str) -> sympy.Basic | None:
    """Parse a normalised LaTeX scalar without evaluating anything (safe on any size), or None."""
    text = latex_to_sympy_text(latex)
    if not text:
        return None
    try:
        return parse_expr(text, local_dict=dict(_LOCALS), transformations=_TRANSFORMS, evaluate=False)
    except Exception:  # noqa: BLE001 - any parse failure just means "not readable"
        return None


def is_astronomical(latex: str) -> bool:
    """True when ``latex`` reads as a number too large to evaluate (over 10,000 digits).

    >>> is_astronomical(r"9^{9^{9^{9}}}"), is_astronomical(r"2^{2^{2}}")
    (True, False)
    """
    expr = parse_unevaluated(latex)
    return expr is not None and power_is_too_big(expr)


def parse_scalar(latex: str) -> sympy.Basic | None:
    """Parse a normalised LaTeX scalar into an evaluated sympy expression, or None.

    >>> parse_scalar(r"\\frac{1}{2}")
    1/2
    >>> parse_scalar(r"9^{9^{9}}") is None
    True
    """
    unevaluated = parse_unevaluated(latex)
    if unevaluated is None or power_is_too_big(unevaluated):
        return None
    try:
        return parse_expr(latex_to_sympy_text(latex), local_dict=dict(_LOCALS), transformations=_TRANSFORMS)
    except Exception:  # noqa: BLE001 - any evaluation failure just means "not readable"
        return None


def symbolic_equal(a: str, b: str, time_limit_s: float = 2.0) -> bool:
    """True when two normalised LaTeX scalars are the same value or expression (exactly).

    Decimals are read as exact rationals, so ``\\frac{\\sqrt{2}}{2}`` != ``0.7071``.

    >>> symbolic_equal(r"\\frac{\\sqrt{2}}{2}", r"\\frac{1}{\\sqrt{2}}")
    True
    >>> symbolic_equal(r"(x+1)^2", r"x^2+2x+1")
    True
    >>> symbolic_equal(r"\\sqrt{2}", "1.4142")
    False
    """
    left, right = parse_scalar(a), parse_scalar(b)
    if left is None or right is None:
        return False
    try:
        with soft_time_limit(time_limit_s):
            if left == right:
                return True
            return bool(sympy.simplify(left - right) == 0)
    except (SoftTimeout, Exception):  # noqa: BLE001 - sympy can raise almost anything on odd input
        return False
