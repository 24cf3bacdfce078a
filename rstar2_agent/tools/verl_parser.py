"""The ``rstar2_agent_hermes`` tool parser for verl 0.9.1's agent loops.

Importing this module registers it: set ``actor_rollout_ref.rollout.multi_turn.format=rstar2_agent_hermes``.

It decodes the turn (special tokens kept, as verl's own hermes parser does) and runs
`parse_tool_calls`. Good calls become verl ``FunctionCall``s. verl's ``FunctionCall`` cannot carry
a parse error, so a `ToolCallError` becomes ``FunctionCall(name=PARSE_ERROR_TOOL_NAME,
arguments=json.dumps({"message": ...}))`` at its position in the list; our agent loop answers it
with the message instead of executing anything. (verl's stock ``ToolAgentLoop`` would answer it
with "Unknown function '__tool_call_error__' ...", which also keeps the trajectory going.)

When verl passes the tool schemas, calls naming any other tool become errors too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Optional

from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.utils.rollout_trace import rollout_trace_op

from .parser import ToolCall, ToolCallError, split_tool_calls

__all__ = ["PARSE_ERROR_TOOL_NAME", "PARSER_NAME", "RStar2AgentHermesToolParser", "error_message"]

PARSER_NAME = "rstar2_agent_hermes"
PARSE_ERROR_TOOL_NAME = "__tool_call_error__"


def _tool_names(tools: Optional[list[Any]]) -> Optional[list[str]]:
    if not tools:
        return None
    names = []
    for tool in tools:
        if isinstance(tool, dict):
            function = tool.get("function") or {}
            name = function.get("name") if isinstance(function, dict) else None
        else:
            name = getattr(getattr(tool, "function", None), "name", None)
        if isinstance(name, str):
            names.append(name)
    return names


def to_function_call(item: ToolCall | ToolCallError) -> FunctionCall:
    if isinstance(item, ToolCall):
        return FunctionCall(name=item.name, arguments=json.dumps(item.arguments, ensure_ascii=False))
    return FunctionCall(name=PARSE_ERROR_TOOL_NAME, arguments=json.dumps({"message": item.message}, ensure_ascii=False))


def error_message(call: FunctionCall) -> Optional[str]:
    """The parse-error text carried by `call`, or None if it is a real call."""
    if call.name != PARSE_ERROR_TOOL_NAME:
        return None
    try:
        message = json.loads(call.arguments).get("message")
    except (json.JSONDecodeError, AttributeError, TypeError):
        message = None
    return message if isinstance(message, str) else "Failed to parse tool call"


@ToolParser.register(PARSER_NAME)
class RStar2AgentHermesToolParser(ToolParser):
    """Hermes ``<tool_call>{json}</tool_call>`` parser that reports broken calls instead of dropping them."""

    def parse_text(self, text: str, tools: Optional[list[Any]] = None) -> tuple[str, list[FunctionCall]]:
        """Synchronous core: ``(text without tool-call blocks, calls)``."""
        content, items = split_tool_calls(text, _tool_names(tools))
        return content, [to_function_call(item) for item in items]

    @rollout_trace_op
    async def extract_tool_calls(self, responses_ids: list[int], tools: list[Any] = None) -> tuple[str, list[FunctionCall]]:
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, self.tokenizer.decode, responses_ids)
        return self.parse_text(text, tools)
