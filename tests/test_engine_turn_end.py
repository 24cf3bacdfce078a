"""The CPU engine ends a tool-call turn as the GPU path does: the EOS after `</tool_call>` is the model's token
(loss mask 1), so the model learns to close its tool calls with EOS, which SGLang needs to end the turn."""

import json
import types

import torch

from rstar2_agent.engine.generator import BatchingGenerator
from rstar2_agent.engine.tiny import build_tokenizer
from rstar2_agent.rollout import AgentLoop, LoopConfig, ToolTurnFormat, load_chat_template
from rstar2_agent.tools import ToolResult

TOK = build_tokenizer()
CALL = TOK.encode('I will run it.\n<tool_call>\n' + json.dumps(
    {"name": "python_code_with_standard_io", "arguments": {"code": "print(6*7)", "input": ""}}) + "\n</tool_call>",
    add_special_tokens=False)
ANSWER = TOK.encode("So the answer is \\boxed{42}.", add_special_tokens=False)


class TurnScript:
    """A causal LM stand-in that writes a fixed text per model turn (one row at a time), for `generate_batch`.
    After its text it keeps writing `filler`, so only a stop string, EOS or `max_tokens` ends the turn."""

    def __init__(self, turns, filler):
        self.turns, self.filler, self.turn, self.start = [list(t) for t in turns], filler, -1, 0

    def __call__(self, input_ids, attention_mask, past_key_values=None, logits_to_keep=None, **kwargs):
        if logits_to_keep is not None:  # the prefill of a new turn
            self.turn, self.start = self.turn + 1, attention_mask.shape[1]
        step = attention_mask.shape[1] - self.start
        script = self.turns[self.turn]
        token = script[step] if step < len(script) else self.filler
        logits = torch.full((input_ids.shape[0], 1, len(TOK)), -1e9)
        logits[:, 0, token] = 0.0
        return types.SimpleNamespace(logits=logits)


class Judge:
    name = "python_code_with_standard_io"
    schema = {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}

    async def execute(self, arguments, history=()):
        return ToolResult(text="Tool call success\nstdout: 42", success=True)


async def test_the_eos_after_a_tool_call_is_a_model_token_with_loss_mask_1():
    filler = TOK.encode(" x", add_special_tokens=False)[0]
    model = TurnScript([CALL, ANSWER + [TOK.eos_token_id]], filler)
    generator = BatchingGenerator(model, TOK)
    template = load_chat_template()
    loop = AgentLoop(TOK, {Judge.name: Judge()}, LoopConfig(response_length=400, max_tool_response_length=1000),
                     ToolTurnFormat(TOK, template))
    traj = await loop.run([1, 2, 3], generator, {"temperature": 0.0})
    turn = len(CALL) + 1
    assert traj.response_ids[:turn] == CALL + [TOK.eos_token_id]  # the turn stops at </tool_call>, EOS added
    assert traj.response_mask[:turn] == [1] * turn  # ... and the EOS is trained, as the model's own
    assert traj.response_ids[-len(ANSWER) - 1:] == ANSWER + [TOK.eos_token_id]
    assert traj.tool_turns == 1 and traj.stats.finish_reason == "stop"
    # the tool turn after it is the template's, tokens exactly as the template renders the conversation
    tool_ids = traj.response_ids[turn: len(traj.response_ids) - len(ANSWER) - 1]
    assert tool_ids == ToolTurnFormat(TOK, template).ids(["Tool call success\nstdout: 42"])
    assert set(traj.response_mask[turn: turn + len(tool_ids)]) == {0}


def test_no_eos_is_added_when_the_turn_ran_out_of_budget_or_wrote_its_own():
    generator = BatchingGenerator(TurnScript([], 0), TOK)
    assert generator.close_turn(CALL, max_tokens=len(CALL)) == CALL  # no room left for it
    assert generator.close_turn(CALL + [TOK.eos_token_id], 100) == CALL + [TOK.eos_token_id]
    assert generator.close_turn(ANSWER, 100) == ANSWER  # cut by max_tokens elsewhere, not at a stop string


def test_ignore_eos_decodes_to_max_tokens_and_eos_otherwise_ends_the_turn():
    filler = TOK.encode(" x", add_special_tokens=False)[0]
    answer = ANSWER + [TOK.eos_token_id]
    stopped = BatchingGenerator(TurnScript([answer], filler), TOK).generate_batch([[1, 2]], {"temperature": 0.0}, [40])
    assert stopped == [answer]
    fixed = BatchingGenerator(TurnScript([answer], filler), TOK).generate_batch(
        [[1, 2]], {"temperature": 0.0, "ignore_eos": True}, [40])
    assert fixed == [answer + [filler] * (40 - len(answer))]
