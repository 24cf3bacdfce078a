"""String normalisation of final answers, so that equal answers written differently compare equal.

Each function removes one kind of notation that does not change the mathematical value, and
:func:`normalize_answer` runs them in a fixed order. Decisions (tested in tests/test_reward.py):

* Percent signs are dropped: ``50\\%`` == ``50`` (but ``50\\%`` != ``0.5``). A ground truth
  ``50\\%`` means "the number 50, in percent", and the model is asked for that number.
* Degree marks are dropped: ``30^\\circ`` == ``30``.
* Units inside ``\\text{...}`` after a number are dropped: ``10\\text{ cm}^2`` == ``10``.
* Other ``\\text{...}`` wrappers are unwrapped: ``\\text{Evelyn}`` == ``Evelyn``.
* A leading ``x =`` (one variable, one ``=``) is dropped: ``x=3`` == ``3``.
* ``\\dfrac``/``\\tfrac`` become ``\\frac``; ``\\frac12`` becomes ``\\frac{1}{2}``.
* Thousands separators are removed only when the whole answer is one such number: ``1,000``.
* LaTeX spacing (``\\,``, ``\\!``, ``\\ ``, ``\\quad``) and ``\\left``/``\\right`` are removed.
"""

from __future__ import annotations

import re
from typing import Callable

from rstar2_agent.reward.extract import matching_brace

__all__ = [
    "normalize_answer",
    "replace_command",
    "strip_units",
    "unwrap_text_commands",
    "strip_percent",
    "strip_degrees",
    "strip_dollars",
    "strip_spacing",
    "canonical_fractions",
    "strip_leading_variable",
    "strip_trailing_period",
    "strip_thousands_separators",
    "collapse_whitespace",
]

# Words that name a unit when they follow a number (compared lower-case, singular or plural).
_UNIT_WORDS = (
    "cm|mm|km|m|meter|metre|inch|inche|foot|feet|ft|yard|yd|mile|mi|sq|square|cubic|unit|"
    "degree|deg|radian|rad|second|sec|s|minute|min|hour|hr|h|day|week|month|year|"
    "dollar|cent|euro|pound|lb|kg|g|gram|mg|liter|litre|l|ml|mph|kmh|percent|point|"
    "student|people|person|way|time|coin|ball|marble|book|apple|page|"
)
_UNIT_TEXT_RE = re.compile(
    r"\\(?:text|textrm|mbox|mathrm)\{\s*(?:(?:" + _UNIT_WORDS + r")(?:e?s)?\.?\s*)+\}(?:\s*\^\s*\{?\d\}?)?",
    re.IGNORECASE,
)
_TEXT_COMMANDS = ("text", "textrm", "textbf", "textit", "mbox", "mathrm", "mathbf", "mathit", "operatorname")
_SPACING_RE = re.compile(r"\\[,!;: ]|\\q?quad\b|~|\\displaystyle|\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\.?")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree(?![a-zA-Z])")
_LEADING_VAR_RE = re.compile(r"^\s*(?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?|\\[a-zA-Z]+)\s*=\s*(?=\S)")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def replace_command(text: str, command: str, render: Callable[[str], str]) -> str:
    """Replace every ``\\command{arg}`` (brace-matched) by ``render(arg)``.

    >>> replace_command(r"\\text{a{b}}c", "text", lambda s: s.upper())
    'A{B}c'
    """
    pattern = re.compile(r"\\" + re.escape(command) + r"(?![a-zA-Z])\s*\{")
    out: list[str] = []
    pos = 0
    while True:
        match = pattern.search(text, pos)
        if match is None:
            break
        close = matching_brace(text, match.end() - 1)
        if close is None:
            break
        out.append(text[pos : match.start()])
        out.append(render(text[match.end() : close]))
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def strip_units(text: str) -> str:
    """Drop ``\\text{unit}`` (optionally squared/cubed) when something precedes it.

    >>> strip_units(r"10\\text{ cm}^2")
    '10'
    >>> strip_units(r"\\text{cm}")
    '\\\\text{cm}'
    """
    stripped = _UNIT_TEXT_RE.sub("", text).strip()
    return stripped if stripped else text


def unwrap_text_commands(text: str) -> str:
    """Replace ``\\text{X}``-like wrappers by ``X``.

    >>> unwrap_text_commands(r"\\text{Evelyn}")
    'Evelyn'
    """
    for command in _TEXT_COMMANDS:
        text = replace_command(text, command, lambda inner: inner)
    return text


def strip_percent(text: str) -> str:
    """Remove percent signs: ``50\\%`` -> ``50`` (see the module docstring for why).

    >>> strip_percent(r"50\\%")
    '50'
    """
    return text.replace("\\%", "").replace("%", "")


def strip_degrees(text: str) -> str:
    """Remove degree marks: ``30^{\\circ}`` -> ``30``.

    >>> strip_degrees(r"30^{\\circ}")
    '30'
    """
    return _DEGREE_RE.sub("", text)


def strip_dollars(text: str) -> str:
    """Remove math-mode ``$`` and currency ``\\$`` signs.

    >>> strip_dollars(r"\\$5")
    '5'
    """
    return text.replace("\\$", "").replace("$", "")


def strip_spacing(text: str) -> str:
    """Remove LaTeX spacing commands and ``\\left``/``\\right`` sizing.

    >>> strip_spacing(r"\\left( 1,\\! 2 \\right)")
    '( 1, 2 )'
    """
    return _SPACING_RE.sub("", text)


def _brace_group(text: str, start: int) -> tuple[str, int] | None:
    """Read one TeX argument at ``start``: ``{...}`` or a single character. Returns (arg, end)."""
    while start < len(text) and text[start] == " ":
        start += 1
    if start >= len(text):
        return None
    if text[start] == "{":
        close = matching_brace(text, start)
        return None if close is None else (text[start + 1 : close], close + 1)
    if text[start] == "\\":
        return None
    return text[start], start + 1


def canonical_fractions(text: str) -> str:
    """Write every fraction as ``\\frac{a}{b}`` and every root as ``\\sqrt{a}``.

    ``\\dfrac``, ``\\tfrac`` and ``\\cfrac`` become ``\\frac``, and one-character arguments get braces.

    >>> canonical_fractions(r"\\dfrac12 + \\tfrac{3}4 + \\sqrt2")
    '\\\\frac{1}{2} + \\\\frac{3}{4} + \\\\sqrt{2}'
    """
    text = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", text)
    out: list[str] = []
    pos = 0
    for match in re.finditer(r"\\(frac|sqrt)(?![a-zA-Z])", text):
        if match.start() < pos:
            continue
        out.append(text[pos : match.start()])
        args_needed = 2 if match.group(1) == "frac" else 1
        cursor = match.end()
        if match.group(1) == "sqrt" and cursor < len(text) and text[cursor] == "[":
            out.append(text[match.start() : cursor])  # leave \sqrt[n]{..} alone
            pos = cursor
            continue
        args = []
        for _ in range(args_needed):
            group = _brace_group(text, cursor)
            if group is None:
                break
            args.append(group[0])
            cursor = group[1]
        if len(args) != args_needed:
            out.append(text[match.start() : match.end()])
            pos = match.end()
            continue
        out.append("\\" + match.group(1) + "".join("{" + canonical_fractions(a) + "}" for a in args))
        pos = cursor
    out.append(text[pos:])
    return "".join(out)


def strip_leading_variable(text: str) -> str:
    """Drop a leading ``x =`` when the answer has exactly one ``=``.

    >>> strip_leading_variable("x = 3")
    '3'
    >>> strip_leading_variable("x=1, y=2")
    'x=1, y=2'
    """
    if text.count("=") != 1:
        return text
    return _LEADING_VAR_RE.sub("", text, count=1)


def strip_trailing_period(text: str) -> str:
    """Remove a sentence-final period (and trailing spaces): ``3.`` -> ``3``.

    >>> strip_trailing_period("3.5.")
    '3.5'
    """
    text = text.rstrip()
    while text.endswith(".") and not text.endswith("\\."):
        text = text[:-1].rstrip()
    return text


def strip_thousands_separators(text: str) -> str:
    """Remove ``,`` (or ``{,}``) thousands separators when the whole answer is one number.

    ``1,2`` is a list of two numbers and is left alone.

    >>> strip_thousands_separators("1{,}000,000")
    '1000000'
    >>> strip_thousands_separators("1,2")
    '1,2'
    """
    candidate = text.replace("{,}", ",").replace(" ", "")
    if _THOUSANDS_RE.match(candidate):
        return candidate.replace(",", "")
    return text


def collapse_whitespace(text: str) -> str:
    """Remove whitespace, keeping one space where a command name meets a letter (``\\pi r``).

    >>> collapse_whitespace(r" \\pi  r + 1 ")
    '\\\\pi r+1'
    """
    text = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", lambda m: m.group(1) + "\x00", text.strip())
    return re.sub(r"\s+", "", text).replace("\x00", " ")


def _canonical_symbols(text: str) -> str:
    """Map synonyms to one spelling (``\\le`` -> ``\\leq``, ``\\lbrace`` -> ``\\{``, ``.5`` -> ``0.5``)."""
    replacements = {
        r"\\lbrace(?![a-zA-Z])": r"\\{",
        r"\\rbrace(?![a-zA-Z])": r"\\}",
        r"\\le(?![a-zA-Z])": r"\\leq",
        r"\\ge(?![a-zA-Z])": r"\\geq",
        r"\\leqslant(?![a-zA-Z])": r"\\leq",
        r"\\geqslant(?![a-zA-Z])": r"\\geq",
        r"\\varnothing(?![a-zA-Z])": r"\\emptyset",
        r"\\dots|\\ldots|\\cdots": "...",
    }
    for pattern, repl in replacements.items():
        text = re.sub(pattern, repl, text)
    return re.sub(r"(?<![\d.])\.(\d)", r"0.\1", text)


def _strip_choice_parens(text: str) -> str:
    """``(A)`` -> ``A``: a multiple-choice letter written with parentheses."""
    match = re.fullmatch(r"\(([A-Za-z])\)", text)
    return match.group(1) if match else text


def normalize_answer(answer: str) -> str:
    """Return a canonical string for ``answer``; equal strings mean equal answers.

    >>> normalize_answer(r"x = \\dfrac12\\,\\text{ cm}.")
    '\\\\frac{1}{2}'
    >>> normalize_answer(r"1,000")
    '1000'
    >>> normalize_answer(r"50\\%")
    '50'
    """
    text = str(answer)
    for step in (
        strip_dollars,
        strip_spacing,
        strip_units,
        unwrap_text_commands,
        strip_percent,
        strip_degrees,
        canonical_fractions,
        _canonical_symbols,
        strip_trailing_period,
        strip_leading_variable,
        strip_thousands_separators,
        collapse_whitespace,
        strip_trailing_period,
        _strip_choice_parens,
    ):
        text = step(text)
    return text
