"""Our own answer grader: normalise both answers, then compare structure, numbers and expressions.

Order rules follow mathematical meaning:

* ``\\{1,2\\}`` (a set) and a bare list ``1, 2`` (e.g. all solutions) compare without order.
* ``(1,2)``, ``[1,2)`` (tuples, intervals) compare element by element, and the bracket kinds must
  match, so ``[1,2)`` != ``[1,2]``.
* Interval unions (``\\cup``) compare without order.
* Plain numbers compare exactly (see :mod:`rstar2_agent.reward.numeric`): an integer never equals a
  non-integer, however close.
* Other scalars compare symbolically with sympy (:mod:`rstar2_agent.reward.latex_sympy`).
"""

from __future__ import annotations

from collections.abc import Callable

from rstar2_agent.reward.latex_sympy import symbolic_equal
from rstar2_agent.reward.normalize import normalize_answer
from rstar2_agent.reward.numeric import parse_exact_number

__all__ = ["split_top_level", "bracketed", "answers_equal", "normalized_equal"]

# Opening bracket -> closing brackets it may pair with (intervals mix them: "[1,2)").
_OPENERS = {"(": (")", "]"), "[": (")", "]"), "\\{": ("\\}",)}


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on ``separator`` outside any brackets or braces.

    >>> split_top_level(r"(1,2),\\frac{1}{2},[3,4)")
    ['(1,2)', '\\\\frac{1}{2}', '[3,4)']
    """
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text.startswith("\\{", i) or text.startswith("\\}", i):
            depth += 1 if text[i + 1] == "{" else -1
            i += 2
            continue
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i + len(separator)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return parts


def bracketed(text: str) -> tuple[str, list[str], str] | None:
    """Return (opener, items, closer) if the whole ``text`` is one bracketed sequence.

    >>> bracketed("[1,2)")
    ('[', ['1', '2'], ')')
    >>> bracketed(r"\\{3\\}")
    ('\\\\{', ['3'], '\\\\}')
    >>> bracketed("(1)+(2)") is None
    True
    """
    for opener, closers in _OPENERS.items():
        if not text.startswith(opener):
            continue
        for closer in closers:
            if text.endswith(closer) and len(text) >= len(opener) + len(closer):
                inner = text[len(opener) : len(text) - len(closer)]
                if _balanced(inner):
                    return opener, split_top_level(inner), closer
    return None


def _balanced(text: str) -> bool:
    """True when brackets in ``text`` never close more than they opened and end balanced."""
    depth = 0
    for ch in text.replace("\\{", "(").replace("\\}", ")"):
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if depth < 0:
            return False
    return depth == 0


def _unordered_match(left: list[str], right: list[str], equal: Callable[[str, str], bool]) -> bool:
    """True if ``right`` is a permutation of ``left`` under ``equal`` (greedy bipartite match)."""
    if len(left) != len(right):
        return False
    remaining = list(right)
    for item in left:
        for k, candidate in enumerate(remaining):
            if equal(item, candidate):
                del remaining[k]
                break
        else:
            return False
    return True


def _ordered_match(left: list[str], right: list[str], equal: Callable[[str, str], bool]) -> bool:
    """True if the lists have equal length and equal items position by position."""
    return len(left) == len(right) and all(equal(a, b) for a, b in zip(left, right))


def _scalar_equal(a: str, b: str) -> bool:
    """Compare two normalised scalars: exactly as numbers if both are plain numbers, else symbolically."""
    if a == b:
        return True
    x, y = parse_exact_number(a), parse_exact_number(b)
    if x is not None and y is not None:
        return x == y
    return symbolic_equal(a, b)


def normalized_equal(a: str, b: str) -> bool:
    """Compare two already-normalised answers, recursing into unions, brackets and lists.

    >>> normalized_equal(r"\\{1,2\\}", r"\\{2,1\\}"), normalized_equal("(1,2)", "(2,1)")
    (True, False)
    """
    if a == b:
        return True
    if not a or not b:
        return False
    union_a, union_b = split_top_level(a, "\\cup"), split_top_level(b, "\\cup")
    if len(union_a) > 1 or len(union_b) > 1:
        return _unordered_match(union_a, union_b, normalized_equal)
    br_a, br_b = bracketed(a), bracketed(b)
    if br_a and br_b:
        if (br_a[0], br_a[2]) != (br_b[0], br_b[2]):
            return False
        if br_a[0] == "\\{":
            return _unordered_match(br_a[1], br_b[1], normalized_equal)
        return _ordered_match(br_a[1], br_b[1], normalized_equal)
    if br_a or br_b:
        # "(5)" vs "5": a parenthesised single item is just that item.
        single = br_a if br_a else br_b
        other = b if br_a else a
        return single[0] == "(" and len(single[1]) == 1 and normalized_equal(single[1][0], other)
    items_a, items_b = split_top_level(a), split_top_level(b)
    if len(items_a) > 1 or len(items_b) > 1:
        return _unordered_match(items_a, items_b, normalized_equal)
    if a.isalpha() and b.isalpha() and len(a) > 1:
        return a.lower() == b.lower()  # words such as "Evelyn" / "evelyn"
    return _scalar_equal(a, b)


def answers_equal(prediction: str, ground_truth: str) -> bool:
    """True if the model's answer equals the ground truth under our normalising grader.

    Never raises: any internal error counts as "not equal".

    >>> answers_equal(r"\\dfrac{1}{2}", "0.5"), answers_equal("2", "2.0000001")
    (True, False)
    >>> answers_equal(r"50\\%", "50"), answers_equal(r"50\\%", "0.5")
    (True, False)
    """
    try:
        return normalized_equal(normalize_answer(prediction), normalize_answer(ground_truth))
    except Exception:  # noqa: BLE001 - a grader must return a verdict, not crash training
        return False
