"""Parse Hermes-style tool calls out of a model turn.

The model writes a call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the format
the rStar2-Agent chat template teaches). `parse_tool_calls` returns every block of a turn, in the
order they appear, as either a `ToolCall` or a `ToolCallError`. A broken block is never dropped
silently and never raises: its `ToolCallError.message` is meant to be fed back to the model as the
tool's answer, so the model can see what went wrong and try again.

Rules (each yields one item, in text order):

* a block whose JSON parses to an object with a string ``name`` and an object ``arguments``
  -> `ToolCall`. ``arguments`` given as a JSON *string* that itself decodes to an object is
  accepted too (some models double-encode). Extra keys next to name/arguments are ignored.
* invalid JSON, a JSON value that is not an object, a missing/non-string/empty ``name``, missing
  ``arguments``, ``arguments`` that is (or decodes to) anything but an object, or a name not in
  ``tool_names`` (only checked when ``tool_names`` is given) -> `ToolCallError`.
* an empty block ``<tool_call></tool_call>`` -> `ToolCallError`.
* a ``<tool_call>`` with no ``</tool_call>`` after it -> `ToolCallError` (raw = rest of the text).
* a ``<tool_call>`` followed by another ``<tool_call>`` before its closing tag (and not parseable
  as a complete call on its own) -> `ToolCallError` for the first, and scanning resumes at the
  second opening tag, so a good call after a broken one is still found.
* a stray ``</tool_call>`` with no opening tag before it -> `ToolCallError`. The model tried to
  write a call and broke it; telling it so is more useful than silently ending the trajectory.

The JSON is read with the JSON grammar itself, so a ``</tool_call>`` (or ``<tool_call>``) inside a
JSON string, e.g. code that prints the tag, does not cut the call short.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Collection, Iterator, Optional, Union

__all__ = [
    "OPEN_TAG",
    "CLOSE_TAG",
    "ToolCall",
    "ToolCallError",
    "parse_tool_calls",
    "split_tool_calls",
]

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
_PREFIX = "Failed to parse tool call: "
_WS = " \t\n\r"
_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class ToolCall:
    """A well-formed call: the tool's name and its arguments (a JSON object)."""

    name: str
    arguments: dict


@dataclass(frozen=True)
class ToolCallError:
    """A block that could not be turned into a `ToolCall`.

    message: text for the model, e.g. ``Failed to parse tool call: invalid JSON (...)``.
    raw:     the offending text, tags included.
    """

    message: str
    raw: str


ParsedItem = Union[ToolCall, ToolCallError]


def parse_tool_calls(text: str, tool_names: Optional[Collection[str]] = None) -> list[ParsedItem]:
    """All tool-call blocks of `text`, in order, as `ToolCall` or `ToolCallError`.

    `tool_names`: if given, a call naming any other tool is a `ToolCallError`.
    Text without any tool-call tag gives ``[]``. Never raises for any string input.
    """
    return [item for _, _, item in _scan(text, tool_names)]


def split_tool_calls(text: str, tool_names: Optional[Collection[str]] = None) -> tuple[str, list[ParsedItem]]:
    """Like `parse_tool_calls`, but also returns `text` with every tool-call block (good or broken) cut out."""
    pieces: list[str] = []
    items: list[ParsedItem] = []
    pos = 0
    for start, end, item in _scan(text, tool_names):
        pieces.append(text[pos:start])
        items.append(item)
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces), items


# ---------------------------------------------------------------------------------------------- internals


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WS:
        pos += 1
    return pos


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages the model reads (``json_type([]) == "array"``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe_json_error(exc: json.JSONDecodeError) -> str:
    return f"invalid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"


def _scan(text: str, tool_names: Optional[Collection[str]]) -> Iterator[tuple[int, int, ParsedItem]]:
    """Yield ``(start, end, item)`` for every block; ``text[start:end]`` is the block's raw text."""
    if not isinstance(text, str):  # defensive: the contract is str, but never raise
        text = "" if text is None else str(text)
    names = None if tool_names is None else frozenset(tool_names)
    pos = 0
    while True:
        open_at = text.find(OPEN_TAG, pos)
        close_at = text.find(CLOSE_TAG, pos)
        if open_at == -1 and close_at == -1:
            return
        if close_at != -1 and (open_at == -1 or close_at < open_at):
            end = close_at + len(CLOSE_TAG)
            yield close_at, end, ToolCallError(
                _PREFIX + f"found {CLOSE_TAG} without a preceding {OPEN_TAG}", text[close_at:end]
            )
            pos = end
            continue

        body_start = open_at + len(OPEN_TAG)

        # 1. Read one JSON value right after the tag; if the closing tag follows it, that is the block.
        #    This keeps tags that appear *inside* JSON strings from ending the block early.
        value_start = _skip_ws(text, body_start)
        try:
            value, value_end = _decoder.raw_decode(text, value_start)
        except (json.JSONDecodeError, RecursionError):
            pass
        else:
            after = _skip_ws(text, value_end)
            if text.startswith(CLOSE_TAG, after):
                end = after + len(CLOSE_TAG)
                yield open_at, end, _to_item(value, text[open_at:end], names)
                pos = end
                continue

        # 2. Otherwise the block runs to the first closing tag (or is unclosed).
        close_at = text.find(CLOSE_TAG, body_start)
        next_open = text.find(OPEN_TAG, body_start)
        if close_at == -1:
            if next_open != -1:
                yield open_at, next_open, ToolCallError(
                    _PREFIX + f"{OPEN_TAG} is not closed before the next {OPEN_TAG}", text[open_at:next_open]
                )
                pos = next_open
                continue
            yield open_at, len(text), ToolCallError(
                _PREFIX + f"{OPEN_TAG} has no matching {CLOSE_TAG}", text[open_at:]
            )
            return
        if next_open != -1 and next_open < close_at:
            yield open_at, next_open, ToolCallError(
                _PREFIX + f"{OPEN_TAG} is not closed before the next {OPEN_TAG}", text[open_at:next_open]
            )
            pos = next_open
            continue

        end = close_at + len(CLOSE_TAG)
        raw = text[open_at:end]
        body = text[body_start:close_at].strip(_WS)
        if not body:
            yield open_at, end, ToolCallError(_PREFIX + f"empty {OPEN_TAG} block", raw)
        else:
            try:
                value = json.loads(body)
            except json.JSONDecodeError as exc:
                yield open_at, end, ToolCallError(_PREFIX + _describe_json_error(exc), raw)
            except RecursionError:
                yield open_at, end, ToolCallError(_PREFIX + "invalid JSON (nested too deeply)", raw)
            else:  # unreachable in practice (step 1 would have taken it); kept for safety
                yield open_at, end, _to_item(value, raw, names)
        pos = end


def _to_item(value: object, raw: str, names: Optional[frozenset]) -> ParsedItem:
    if not isinstance(value, dict):
        return ToolCallError(
            _PREFIX + f'expected a JSON object with "name" and "arguments", got {json_type(value)}', raw
        )
    if "name" not in value:
        return ToolCallError(_PREFIX + 'missing "name"', raw)
    name = value["name"]
    if not isinstance(name, str):
        return ToolCallError(_PREFIX + f'"name" must be a string, got {json_type(name)}', raw)
    if not name.strip():
        return ToolCallError(_PREFIX + '"name" is empty', raw)
    if "arguments" not in value:
        return ToolCallError(_PREFIX + f'missing "arguments" in call to "{name}"', raw)
    arguments = value["arguments"]
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return ToolCallError(
                _PREFIX + f'"arguments" of "{name}" must be a JSON object, got a string that is not valid JSON', raw
            )
        if not isinstance(decoded, dict):
            return ToolCallError(
                _PREFIX
                + f'"arguments" of "{name}" must be a JSON object, got a string holding {json_type(decoded)}',
                raw,
            )
        arguments = decoded
    elif not isinstance(arguments, dict):
        return ToolCallError(
            _PREFIX + f'"arguments" of "{name}" must be a JSON object, got {json_type(arguments)}', raw
        )
    if names is not None and name not in names:
        available = ", ".join(f'"{n}"' for n in sorted(names)) or "none"
        return ToolCallError(_PREFIX + f'unknown tool "{name}" (available tools: {available})', raw)
    return ToolCall(name=name, arguments=arguments)
