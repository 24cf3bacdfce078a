"""The training-time agent for evaluation and chat: the chat template, the tools, `AgentLoop` and the reward.

Nothing here is a second implementation: the prompt is `rstar2_agent.rollout.prompt_ids` (the chat
template with the tool schema, or a system prompt), the loop is `rstar2_agent.rollout.AgentLoop` with
`ToolTurnFormat`, the tool is `PythonTool` on the code judge, the text scored is the model-written spans
(`rstar2_agent.reward.verl_manager.decode_model_text`) and the score is `compute_score` in a `RewardPool`, as
in training. What is added is bookkeeping: `RecordingTool` sees every call (arguments, untruncated output), so
an eval can store it and the chat can print it as it happens.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping, Optional, Sequence

from rstar2_agent.rollout import AgentLoop, LoopConfig, ToolTurnFormat, Trajectory, load_chat_template, prompt_ids
from rstar2_agent.rollout.core import mask_spans
from rstar2_agent.tools import Tool, ToolCall, ToolResult

__all__ = ["RecordingTool", "AgentSettings", "Agent", "SYSTEM_PROMPTS", "resolve_system_prompt", "turns_of"]


def resolve_system_prompt(value: Optional[str]) -> Optional[str]:
    """`None`/"template": none (the chat template lists the tool schema, the GPU recipe's prompt); "cpu": the
    CPU engine's `DEFAULT_SYSTEM_PROMPT` (what `rstar2-agent train` on CPU trains with); anything else: itself."""
    if value in (None, "", "template"):
        return None
    if value == "cpu":
        from rstar2_agent.engine.config import DEFAULT_SYSTEM_PROMPT

        return DEFAULT_SYSTEM_PROMPT
    return value


SYSTEM_PROMPTS = ("template", "cpu")


class RecordingTool:
    """A tool that calls `on_call(record)` after each call of the wrapped tool."""

    def __init__(self, tool: Tool, on_call: Callable[[dict], None], on_start: Optional[Callable[[dict], None]] = None):
        self.tool = tool
        self.name = tool.name
        self.schema = tool.schema
        self.on_call = on_call
        self.on_start = on_start

    async def execute(self, arguments: dict, history: Sequence[ToolCall] = ()) -> ToolResult:
        if self.on_start is not None:
            self.on_start({"name": self.name, "arguments": arguments})
        started = time.perf_counter()
        result = await self.tool.execute(arguments, history)
        self.on_call({"name": self.name, "arguments": arguments, "output": result.text,
                      "success": bool(result.success), "infra_error": bool(getattr(result, "infra_error", False)),
                      "latency_s": round(time.perf_counter() - started, 4)})
        return result


@dataclasses.dataclass
class AgentSettings:
    max_tokens: int = 4096  # one response budget for the whole trajectory, tool turns included
    max_turns: int = 5  # assistant turns
    max_parallel_calls: int = 1
    max_tool_response_length: int = 256
    tool_response_truncate_side: str = "middle"
    system_prompt: Optional[str] = None  # see resolve_system_prompt
    chat_template: Optional[str] = None  # a jinja file; None: rstar2_agent/config/chat_template.jinja

    def loop_config(self) -> LoopConfig:
        return LoopConfig(response_length=self.max_tokens, max_assistant_turns=self.max_turns,
                          max_parallel_calls=self.max_parallel_calls,
                          max_tool_response_length=self.max_tool_response_length,
                          tool_response_truncate_side=self.tool_response_truncate_side)


class Agent:
    """Prompts, loops and scoring for one tokenizer, tool set and `AgentSettings`."""

    def __init__(self, tokenizer, tools: Mapping[str, Tool], settings: AgentSettings):
        self.tokenizer = tokenizer
        self.tools = dict(tools)
        self.settings = settings
        self.template = load_chat_template(settings.chat_template)
        self.system_prompt = resolve_system_prompt(settings.system_prompt)
        self.loop_config = settings.loop_config()
        self.tool_turns = ToolTurnFormat(tokenizer, self.template)

    def prompt_ids(self, conversation) -> list[int]:
        """A problem's prompt as training builds it, or a whole conversation's (the chat): the system prompt
        first when set, the tool schema in the template's system turn otherwise (`rollout.prompt_ids`)."""
        tools = None if self.system_prompt else [t.schema for t in self.tools.values()]
        return prompt_ids(self.tokenizer, self.template, conversation, self.system_prompt, tools)

    def loop(self, on_call: Optional[Callable[[dict], None]] = None,
             on_start: Optional[Callable[[dict], None]] = None) -> AgentLoop:
        """An `AgentLoop` (cheap: one per trajectory) whose tool calls are reported to `on_call`."""
        tools = self.tools if on_call is None else \
            {name: RecordingTool(tool, on_call, on_start) for name, tool in self.tools.items()}
        return AgentLoop(self.tokenizer, tools, self.loop_config, self.tool_turns)

    def model_text(self, traj: Trajectory) -> str:
        """The text the reward scores: the model-written spans only (as the verl reward manager decodes them)."""
        import torch

        from rstar2_agent.reward.verl_manager import decode_model_text

        return decode_model_text(self.tokenizer, torch.tensor(traj.response_ids, dtype=torch.long),
                                 torch.tensor(traj.response_mask, dtype=torch.long))


def turns_of(tokenizer, traj: Trajectory) -> list[dict]:
    """The response as turns, `{"role": "assistant"|"tool", "text"}`: runs of loss mask 1 are the model's,
    runs of 0 the tool turns the loop appended (decoded with their special tokens)."""
    turns = []
    position = 0
    for start, end in mask_spans(traj.response_mask) + [[len(traj.response_ids), len(traj.response_ids)]]:
        if start > position:
            turns.append({"role": "tool", "text": tokenizer.decode(traj.response_ids[position:start],
                                                                   skip_special_tokens=False)})
        if end > start:
            turns.append({"role": "assistant", "text": tokenizer.decode(traj.response_ids[start:end],
                                                                        skip_special_tokens=False)})
        position = end
    return turns
