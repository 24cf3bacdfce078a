"""The cold start: a short SFT on tool-use demonstrations before RL, as rStar2-Agent starts RL from a
non-reasoning SFT that teaches the format (tool calls, boxed answers) and no reasoning.

A demonstration is a real trajectory: a scripted "teacher" plays the model's turns through the same agent loop,
tool and code judge that RL uses, so the tokens, tool outputs and loss masks are exactly those of a rollout:

    <reason>I will compute it with Python.
    <tool_call>
    {"name": "python_code_with_standard_io", "arguments": {"code": "print(149 * 594)", "input": ""}}
    </tool_call>                                                     <- loss mask 1 (teacher turn)
    <tool_response> Tool call success  stdout: 88506 ... </tool_response>   <- loss mask 0 (the judge's output)
    <reason>The program printed 88506, so the answer is \\boxed{88506}.</reason> <answer>\\boxed{88506}</answer>
                                                                     <- loss mask 1
The SFT loss is the token-mean negative log-likelihood of the mask-1 tokens.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import torch

from rstar2_agent.data.math_tasks import reference_program
from rstar2_agent.engine.tasks import Task
from rstar2_agent.engine.update import Batch, response_logprobs
from rstar2_agent.rollout import Generation
from rstar2_agent.tools.python_tool import PYTHON_TOOL_NAME


def tool_call_text(code: str) -> str:
    call = {"name": PYTHON_TOOL_NAME, "arguments": {"code": code, "input": ""}}
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>"


def demonstration_turns(task: Task) -> list[str]:
    """The teacher's two turns for a bundled task: call the tool with the reference program, then answer."""
    answer = task.answer
    return [f"I will compute it with Python.\n{tool_call_text(reference_program(vars(task)))}",
            f"The program printed {answer}, so the answer is \\boxed{{{answer}}}.</reason> "
            f"<answer>\\boxed{{{answer}}}</answer>"]


class TeacherGenerator:
    """A `generate` that plays scripted turns: request `r` gets `turns[r]` one by one, each closed with EOS."""

    def __init__(self, tokenizer, turns: Mapping[str, Sequence[str]]):
        self.tokenizer = tokenizer
        self.turns = {request_id: list(t) for request_id, t in turns.items()}

    async def __call__(self, request_id: str, token_ids: list[int], sampling_params) -> Generation:
        text = self.turns[request_id].pop(0)
        return Generation(self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id])


def sft_step(model, optimizer, batch: Batch, max_grad_norm: float = 1.0, micro_batch_size: int = 4) -> dict:
    """One optimizer step of token-mean NLL over the mask-1 response tokens."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = batch.response_mask.sum().clamp(min=1)
    loss_sum = 0.0
    for _, micro in batch.micro_batches(micro_batch_size):
        logprobs = response_logprobs(model, micro, micro_batch_size)
        loss = -(logprobs * micro.response_mask).sum() / total
        loss.backward()
        loss_sum += float(loss.detach())
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
    optimizer.step()
    model.eval()
    return {"cold_start/loss": loss_sum, "cold_start/grad_norm": grad_norm}
