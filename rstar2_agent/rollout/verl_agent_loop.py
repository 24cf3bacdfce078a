"""`RStar2AgentLoop`: the engine-agnostic loop (`core.AgentLoop`) as a verl 0.9.1 agent loop named `rstar2_agent`.

verl instantiates it once per trajectory with the trainer config, an `LLMServerClient` (SGLang/vLLM servers
on GPUs, or our CPU engine's stand-in), the tokenizer (its `chat_template` already replaced by
`actor_rollout_ref.model.custom_chat_template`) and the tools loaded from
`actor_rollout_ref.rollout.multi_turn.tool_config_path`. Dataset rows select it with `agent_name: rstar2_agent`.
Loop settings come from `actor_rollout_ref.rollout.multi_turn.*` and `rollout.response_length`.

What the output's `extra_fields` carry, and who reads them:
- the server's own fields (`global_steps`, `min_global_steps`, `max_global_steps`, ...) merged over the turns
  (`merge_server_fields`): verl tags each TransferQueue row with the weight versions that generated it and
  its metrics step reads them as integers;
- `model_spans` (`MODEL_SPANS`): the `[start, end)` response positions the model wrote. verl hands the reward
  loop only `extra_fields` (as `tool_extra_fields`), not `response_mask`, and the `code_judge` reward scores
  only these spans, so nothing a tool printed can count as the answer;
- our tool counters and the finish reason, for the trainer's rollout metrics;
- `infra_error` (bool): the sandbox failed a call (see `rstar2_agent.rollout.core`); the trainer's selection
  (`rstar2_agent.trainer.roc_trainer`) drops the trajectory and counts it in `rollout/infra_errors`.
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from rstar2_agent.rollout.core import MODEL_SPANS, AgentLoop, Generation, LoopConfig
from rstar2_agent.rollout.template import ToolTurnFormat, load_chat_template
from rstar2_agent.rollout.template import prompt_ids as build_prompt_ids
from rstar2_agent.tools import Tool


def loop_tools(verl_tools) -> dict[str, Tool]:
    """Our `Tool` view of each tool verl loaded from the tool yaml (`rstar2_agent.tools.verl_tools` classes carry
    it as `rstar2_tool`), by name. Other verl tools are refused: this loop runs our tools only, which take the
    trajectory's call history and report failures the way RoC counts them."""
    tools = {}
    for tool in verl_tools:
        inner = getattr(tool, "rstar2_tool", None)
        if inner is None:
            raise TypeError(f"tool {tool.name!r} ({type(tool).__module__}.{type(tool).__qualname__}) is not an "
                            "rstar2_agent tool; the rstar2_agent agent loop runs rstar2_agent.tools.verl_tools."
                            "VerlPythonTool or VerlJupyterTool (use verl's tool_agent loop for other tools)")
        tools[tool.name] = inner
    return tools


def merge_server_fields(merged: dict, turn: dict) -> dict:
    """Fold one turn's server `extra_fields` into the trajectory's: the first turn's values, except that the
    weight versions span all turns (the earliest `min_global_steps`, the latest `max_global_steps`).

    >>> merge_server_fields({"global_steps": 3, "min_global_steps": 3, "max_global_steps": 3},
    ...                     {"global_steps": 4, "min_global_steps": 4, "max_global_steps": 4})
    {'global_steps': 3, 'min_global_steps': 3, 'max_global_steps': 4}
    """
    if not merged:
        return dict(turn)
    merged = {**turn, **merged}
    for key, pick in (("min_global_steps", min), ("max_global_steps", max)):
        values = [v for v in (merged.get(key), turn.get(key)) if v is not None]
        if values:
            merged[key] = pick(values)
    return merged


_TOOL_TURNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def tool_turn_format(tokenizer, template: str) -> ToolTurnFormat:
    """One ToolTurnFormat per tokenizer and template, kept across trajectories: verl builds a new agent loop
    for every trajectory, and deriving the tool-turn text renders the template."""
    per_template = _TOOL_TURNS.setdefault(tokenizer, {})
    if template not in per_template:
        per_template[template] = ToolTurnFormat(tokenizer, template)
    return per_template[template]


def loop_config_from_verl(rollout_config) -> LoopConfig:
    mt = rollout_config.multi_turn
    return LoopConfig(
        response_length=rollout_config.response_length,
        max_assistant_turns=mt.get("max_assistant_turns") or 5,
        max_parallel_calls=mt.get("max_parallel_calls") or 1,
        max_tool_response_length=mt.get("max_tool_response_length") or 256,
        tool_response_truncate_side=mt.get("tool_response_truncate_side") or "middle",
    )


@register("rstar2_agent")
class RStar2AgentLoop(AgentLoopBase):
    def __init__(self, *args, tools=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tools = loop_tools(tools.tools if tools is not None else [])
        self.tool_schemas = [t.schema for t in self.tools.values()] or None
        self.template = self.tokenizer.chat_template or load_chat_template()
        self.core = AgentLoop(self.tokenizer, self.tools, loop_config_from_verl(self.rollout_config),
                              tool_turn_format(self.tokenizer, self.template))

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        messages = list(kwargs["raw_prompt"])
        prompt_ids = self._cap_text_prompt_length(await self.loop.run_in_executor(
            None, lambda: build_prompt_ids(self.tokenizer, self.template, messages, tools=self.tool_schemas)))
        server_fields: dict = {}

        async def generate(request_id: str, token_ids: list[int], params: dict[str, Any]) -> Generation:
            nonlocal server_fields
            out = await self.server_manager.generate(request_id, prompt_ids=token_ids, sampling_params=params)
            server_fields = merge_server_fields(server_fields, out.extra_fields or {})
            return Generation(token_ids=list(out.token_ids), log_probs=out.log_probs)

        traj = await self.core.run(prompt_ids, generate, sampling_params, request_id=uuid.uuid4().hex)
        s = traj.stats
        return AgentLoopOutput(
            prompt_ids=traj.prompt_ids,
            response_ids=traj.response_ids,
            response_mask=traj.response_mask,
            response_logprobs=traj.response_logprobs,
            num_turns=traj.num_turns,
            metrics=AgentLoopMetrics(generate_sequences=s.generation_s, tool_calls=s.tool_latency_s),
            extra_fields={
                **server_fields,
                MODEL_SPANS: traj.model_spans,
                "tool_call_count": s.tool_calls,
                "tool_error_count": s.tool_errors,
                "infra_error": traj.infra_error,
                "infra_error_count": s.infra_errors,
                "parse_error_count": s.parse_errors,
                "finish_reason": s.finish_reason,
            },
        )
