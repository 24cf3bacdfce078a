"""Exact reading of plain numbers (integers, decimals, simple fractions) as :class:`fractions.Fraction`.

Why exact: a reward must never call ``2`` and ``1.9999999`` equal because they round alike.
Comparing ``Fraction`` values makes ``0.5 == 1/2 == \\frac{1}{2}`` while keeping every
integer/non-integer pair apart.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["parse_exact_number", "is_integer_value"]

_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_SLASH_RE = re.compile(r"^([+-]?)\(?([+-]?\d+)\)?/\(?([+-]?\d+)\)?$")
_FRAC_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_MAX_DIGITS = 200  # longer literals are not "plain numbers" (and would be slow to compare)


def _decimal(text: str) -> Fraction | None:
    """``"12"``, ``"-0.25"``, ``"3."`` -> Fraction; anything else -> None."""
    if not _DECIMAL_RE.match(text) or len(text) > _MAX_DIGITS:
        return None
    return Fraction(text.rstrip(".") or "0")


def _ratio(sign: str, numerator: str, denominator: str) -> Fraction | None:
    """Build ``sign * numerator / denominator``; a zero denominator is not a number."""
    if len(numerator) > _MAX_DIGITS or len(denominator) > _MAX_DIGITS or int(denominator) == 0:
        return None
    value = Fraction(int(numerator), int(denominator))
    return -value if sign == "-" else value


def parse_exact_number(text: str) -> Fraction | None:
    """Read a normalised answer as an exact number, or return None if it is not a plain number.

    >>> parse_exact_number("0.5") == parse_exact_number(r"\\frac{1}{2}") == parse_exact_number("1/2")
    True
    >>> parse_exact_number("-3")
    Fraction(-3, 1)
    >>> parse_exact_number(r"\\sqrt{2}") is None
    True
    """
    text = text.strip()
    value = _decimal(text)
    if value is not None:
        return value
    for pattern in (_FRAC_RE, _SLASH_RE):
        match = pattern.match(text)
        if match:
            return _ratio(*match.groups())
    return None


def is_integer_value(value: Fraction) -> bool:
    """True when the exact value is a whole number (``2``, ``2.0``, ``4/2``).

    >>> is_integer_value(Fraction(4, 2)), is_integer_value(Fraction(1, 2))
    (True, False)
    """
    return value.denominator == 1
