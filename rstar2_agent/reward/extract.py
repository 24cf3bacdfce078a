"""Find the model's final answer in a response: the last ``\\boxed{...}`` of the model's own text.

Two ideas live here:

* :func:`strip_tool_responses` removes every ``<tool_response>...</tool_response>`` block, so
  that a box printed by a tool (for example ``print(r"\\boxed{5}")`` in the Python sandbox)
  can never be taken as the model's answer.
* :func:`last_boxed_content` returns the content of the last ``\\boxed{...}`` or ``\\fbox{...}``,
  matching braces so nested groups such as ``\\boxed{\\frac{1}{2}}`` come back whole.
"""

from __future__ import annotations

import re

__all__ = ["strip_tool_responses", "last_boxed_content", "unwrap_boxed", "matching_brace"]

# A closed block, or an unclosed one that runs to the end of the text (a response cut by the
# length limit in the middle of a tool turn).
_TOOL_RESPONSE_RE = re.compile(r"<tool_response>.*?(?:</tool_response>|\Z)", re.DOTALL)
# ``\boxed`` / ``\fbox`` followed by optional spaces and an opening brace.
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def strip_tool_responses(text: str) -> str:
    """Remove tool output blocks so only text the model wrote remains.

    Why: a tool's stdout is not the model's answer, and a program can print a box.

    >>> strip_tool_responses("a <tool_response>\\\\boxed{1}</tool_response> b")
    'a  b'
    >>> strip_tool_responses("x <tool_response>cut off")
    'x '
    """
    return _TOOL_RESPONSE_RE.sub("", text)


def matching_brace(text: str, open_index: int) -> int | None:
    """Return the index of the ``}`` that closes the ``{`` at ``open_index`` (or None).

    Escaped braces (``\\{`` and ``\\}``, LaTeX set braces) count as ordinary characters.

    >>> matching_brace("{a{b}c}", 0)
    6
    >>> matching_brace("{a{b}", 0) is None
    True
    """
    depth = 0
    i = open_index
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, e.g. "\{" or "\}"
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed_content(text: str) -> str | None:
    """Return the content of the last complete ``\\boxed{...}``/``\\fbox{...}``, else None.

    A box whose braces never close (a response cut mid-answer) is ignored, and an earlier
    complete box is used instead.

    >>> last_boxed_content(r"first \\boxed{1}, then \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> last_boxed_content(r"\\fbox{7}")
    '7'
    >>> last_boxed_content("no answer") is None
    True
    """
    for match in reversed(list(_BOX_RE.finditer(text))):
        close = matching_brace(text, match.end() - 1)
        if close is not None:
            return text[match.end() : close].strip()
    return None


def unwrap_boxed(text: str) -> str:
    """Return the last box's content if ``text`` holds a box, else ``text`` itself.

    Why: some data sets store the ground truth as ``\\boxed{42}``.

    >>> unwrap_boxed(r"\\boxed{42}")
    '42'
    >>> unwrap_boxed("42")
    '42'
    """
    inner = last_boxed_content(text)
    return text if inner is None else inner
