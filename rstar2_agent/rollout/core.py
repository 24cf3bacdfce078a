"""The multi-turn tool-use loop, independent of any engine: verl's rollout servers and our CPU engine share it.

One trajectory:

    prompt ids ─► generate ─► parse <tool_call>s ─► run tools (code judge) ─► append tool turn ─► generate ...

- One response budget (`response_length` tokens) is shared by the whole trajectory, tool tokens included.
- Model tokens get loss mask 1, tool-turn tokens mask 0 (and log-prob 0.0).
- The trajectory always ends on a model turn: a tool turn is appended only if at least one token of budget
  is left after it, and never after the last allowed assistant turn.
- Token-in-token-out: generated ids are kept as they are, never decoded and re-encoded.
- Decoding, parsing and encoding run in worker threads, so that one event loop can drive thousands of
  trajectories (verl runs every trajectory of an agent-loop worker on one loop).

A tool call that the sandbox fails (judge unreachable, `queue_timeout` or `internal_error` after the tool's retries;
`ToolResult.infra_error`) ends the trajectory at once with finish_reason "infra_error" and `Trajectory.infra_error`
set; it is not counted as a tool error, and the trainers leave the trajectory out of selection and update.
A `generate` that raises `ContextFull` (the conversation no longer fits the model's context: a served model's
400, a local engine's refusal) ends the trajectory there with finish_reason "context_full", keeping what it has.

Example (shapes): a 20-token prompt, a 30-token model turn with a tool call, a 25-token tool turn and a
12-token answer give prompt_ids[20], response_ids[67], response_mask = [1]*30 + [0]*25 + [1]*12.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any, Awaitable, Mapping, Optional, Protocol, Sequence

from rstar2_agent.rollout.template import ToolTurnFormat
from rstar2_agent.tools import Tool, ToolCall, ToolCallError, ToolResult, parse_tool_calls
from rstar2_agent.tools.base import failure_text

TRUNCATE_SIDES = ("left", "right", "middle")
#: the trajectory's extra field with its model-written spans (`Trajectory.model_spans`), read by the reward
MODEL_SPANS = "model_spans"


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Mirrors verl's `actor_rollout_ref.rollout.multi_turn.*` keys (rStar2 values as defaults)."""

    response_length: int
    max_assistant_turns: int = 5
    max_parallel_calls: int = 1
    max_tool_response_length: int = 256  # characters of one tool response the model sees
    tool_response_truncate_side: str = "middle"

    def __post_init__(self):
        if self.response_length < 1 or self.max_assistant_turns < 1 or self.max_parallel_calls < 1:
            raise ValueError("response_length, max_assistant_turns and max_parallel_calls must be >= 1")
        if self.tool_response_truncate_side not in TRUNCATE_SIDES:
            raise ValueError(f"tool_response_truncate_side must be one of {TRUNCATE_SIDES}")


@dataclasses.dataclass
class Generation:
    """What one `generate` call returns (verl's TokenOutput has the same two first fields)."""

    token_ids: list[int]
    log_probs: Optional[list[float]] = None


class GenerateFn(Protocol):
    def __call__(self, request_id: str, token_ids: list[int], sampling_params: dict[str, Any]) -> Awaitable[Generation]:
        ...


class ContextFull(Exception):
    """Raised by a `generate` when the prompt plus what the trajectory has so far leaves no room in the model's
    context for another turn; the loop ends the trajectory (finish_reason "context_full") instead of failing."""


@dataclasses.dataclass
class TrajectoryStats:
    assistant_turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0  # calls whose execution failed (error, timeout, bad arguments, unknown tool)
    infra_errors: int = 0  # calls the sandbox failed (unreachable judge, queue_timeout, internal_error), retries spent
    parse_errors: int = 0  # malformed <tool_call> blocks
    skipped_calls: int = 0  # calls beyond max_parallel_calls in one turn
    tool_latency_s: float = 0.0
    generation_s: float = 0.0
    finish_reason: str = ""  # stop | length | max_turns | tool_response_too_long | infra_error | context_full


@dataclasses.dataclass
class Trajectory:
    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    response_logprobs: Optional[list[float]]
    stats: TrajectoryStats
    tool_turns: int = 0

    @property
    def infra_error(self) -> bool:
        """The sandbox failed one of its calls: the trajectory says nothing about the model and is not trained on
        (`rstar2_agent.down_sample.select_rows` leaves it out, with its reward)."""
        return self.stats.infra_errors > 0

    @property
    def num_turns(self) -> int:
        """User prompt + assistant turns + tool turns, as verl counts them."""
        return 1 + self.stats.assistant_turns + self.tool_turns

    @property
    def model_spans(self) -> list[list[int]]:
        """`[start, end)` response positions of the model-written runs (mask 1); see `mask_spans`."""
        return mask_spans(self.response_mask)


def mask_spans(mask: Sequence[int]) -> list[list[int]]:
    """The `[start, end)` runs where `mask` is 1: a compact form of the loss mask that travels with a trajectory
    where verl does not pass `response_mask` on (its reward loop sees only the agent loop's extra fields).

    >>> mask_spans([1, 1, 0, 0, 0, 1]), mask_spans([0, 0]), mask_spans([])
    ([[0, 2], [5, 6]], [], [])
    """
    spans: list[list[int]] = []
    for position, bit in enumerate(mask):
        if bit and spans and spans[-1][1] == position:
            spans[-1][1] = position + 1
        elif bit:
            spans.append([position, position + 1])
    return spans


def truncate(text: str, limit: int, side: str) -> str:
    """Cut a tool response to `limit` characters, saying so.

    >>> truncate("abcdefghij", 4, "left"), truncate("abcdefghij", 4, "right"), truncate("abcdefghij", 4, "middle")
    ('abcd...(truncated)', '(truncated)...ghij', 'ab...(truncated)...ij')
    """
    if len(text) <= limit:
        return text
    if side == "left":
        return text[:limit] + "...(truncated)"
    if side == "right":
        return "(truncated)..." + text[-limit:]
    half = limit // 2
    return text[:half] + "...(truncated)..." + text[len(text) - (limit - half):]


class AgentLoop:
    """Runs trajectories for one tokenizer, tool set and configuration."""

    def __init__(self, tokenizer, tools: Mapping[str, Tool], config: LoopConfig, tool_turns: ToolTurnFormat):
        self.tokenizer = tokenizer
        self.tools = dict(tools)
        self.config = config
        self.tool_turns = tool_turns

    async def _call(self, item, history: Sequence[ToolCall], stats: TrajectoryStats) -> str:
        if isinstance(item, ToolCallError):
            stats.parse_errors += 1
            return item.message
        stats.tool_calls += 1
        tool = self.tools.get(item.name)
        if tool is None:
            stats.tool_errors += 1
            return failure_text(f"unknown tool {item.name!r}; available: {', '.join(sorted(self.tools))}")
        try:
            result: ToolResult = await tool.execute(item.arguments, history)
        except Exception as exc:  # noqa: BLE001 - a broken tool must not end the rollout
            result = ToolResult(text=failure_text(f"{type(exc).__name__}: {exc}"), success=False)
        if getattr(result, "infra_error", False):
            stats.infra_errors += 1  # the sandbox's fault, not a tool error of the model
        elif not result.success:
            stats.tool_errors += 1
        return result.text

    async def run_tools(self, text: str, history: list[ToolCall], stats: TrajectoryStats) -> list[str]:
        """Parse one model turn and run its calls concurrently; one response text per parsed item, in order."""
        items = await asyncio.to_thread(parse_tool_calls, text, tool_names=None)
        limit = self.config.max_parallel_calls
        run, skipped = items[:limit], items[limit:]
        start = time.perf_counter()
        earlier = list(history)
        outputs = await asyncio.gather(*(self._call(item, earlier, stats) for item in run))
        stats.tool_latency_s += time.perf_counter() - start
        history.extend(item for item in run if isinstance(item, ToolCall))
        stats.skipped_calls += len(skipped)
        outputs += [failure_text(f"not run; at most {limit} tool call(s) per turn")] * len(skipped)
        cfg = self.config
        return [truncate(o, cfg.max_tool_response_length, cfg.tool_response_truncate_side) for o in outputs]

    async def run(self, prompt_ids: list[int], generate: GenerateFn, sampling_params: Mapping[str, Any],
                  request_id: Optional[str] = None) -> Trajectory:
        cfg = self.config
        request_id = request_id or uuid.uuid4().hex
        response_ids: list[int] = []
        mask: list[int] = []
        logprobs: list[float] = []
        have_logprobs = True
        stats = TrajectoryStats()
        history: list[ToolCall] = []
        tool_turns = 0
        while True:
            params = dict(sampling_params, max_tokens=cfg.response_length - len(mask))
            start = time.perf_counter()
            try:
                out = await generate(request_id, prompt_ids + response_ids, params)
            except ContextFull:
                stats.finish_reason = "context_full"
                break
            finally:
                stats.generation_s += time.perf_counter() - start
            new_ids = list(out.token_ids)[: cfg.response_length - len(mask)]
            response_ids += new_ids
            mask += [1] * len(new_ids)
            if out.log_probs is None:
                have_logprobs = False
            else:
                logprobs += list(out.log_probs)[: len(new_ids)]
            stats.assistant_turns += 1
            if len(mask) >= cfg.response_length:
                stats.finish_reason = "length"
                break
            text = await asyncio.to_thread(self.tokenizer.decode, new_ids, skip_special_tokens=False)
            if "<tool_call>" not in text and "</tool_call>" not in text:
                stats.finish_reason = "stop"
                break
            if stats.assistant_turns >= cfg.max_assistant_turns:
                stats.finish_reason = "max_turns"
                break
            outputs = await self.run_tools(text, history, stats)
            if stats.infra_errors:  # the sandbox failed: stop here, this trajectory will not be trained on
                stats.finish_reason = "infra_error"
                break
            emitted_eos = bool(new_ids) and new_ids[-1] == self.tool_turns.eos_id
            tool_ids = await asyncio.to_thread(self.tool_turns.ids, outputs, model_emitted_eos=emitted_eos)
            if len(mask) + len(tool_ids) >= cfg.response_length:
                stats.finish_reason = "tool_response_too_long"
                break
            response_ids += tool_ids
            mask += [0] * len(tool_ids)
            logprobs += [0.0] * len(tool_ids)
            tool_turns += 1
        return Trajectory(prompt_ids=list(prompt_ids), response_ids=response_ids, response_mask=mask,
                          response_logprobs=logprobs if have_logprobs else None, stats=stats, tool_turns=tool_turns)
