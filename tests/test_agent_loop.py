"""The multi-turn loop: masks, budgets, truncation, stop reasons, token-exact turns, real tools and a real model."""

import asyncio
import json

import pytest

from rstar2_agent.rollout import AgentLoop, ContextFull, Generation, LoopConfig, ToolTurnFormat, render, truncate
from rstar2_agent.tools import ToolResult
from rstar2_agent.engine.generator import BatchingGenerator
from rstar2_agent.engine.tiny import build_model, build_tokenizer

TOK = build_tokenizer()
EOS = TOK.eos_token_id


def call(code: str, name: str = "python_code_with_standard_io") -> str:
    args = {"code": code, "input": ""} if name == "python_code_with_standard_io" else {"code": code}
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


class Scripted:
    """A generator that answers with fixed texts, canonically tokenised and EOS-terminated."""

    def __init__(self, *texts: str, logprobs: bool = False, eos: bool = True):
        self.texts = list(texts)
        self.calls = []
        self.logprobs = logprobs
        self.eos = eos

    async def __call__(self, request_id, token_ids, sampling_params):
        self.calls.append((request_id, list(token_ids), dict(sampling_params)))
        text = self.texts[min(len(self.calls), len(self.texts)) - 1]
        ids = TOK.encode(text, add_special_tokens=False) + ([EOS] if self.eos else [])
        return Generation(token_ids=ids, log_probs=[-0.5] * len(ids) if self.logprobs else None)


class EchoTool:
    """Stands in for the code judge in unit tests: returns a fixed text, records concurrency."""

    name = "python_code_with_standard_io"
    schema = {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}

    def __init__(self, text="Tool call success\nstdout: 42\nexecution time: 0.01s", success=True, delay=0.0):
        self.text, self.success, self.delay = text, success, delay
        self.running = self.max_running = 0
        self.histories = []

    async def execute(self, arguments, history=()):
        self.histories.append(list(history))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        if isinstance(self.text, Exception):
            raise self.text
        return ToolResult(text=self.text, success=self.success)


def make_loop(tool=None, **cfg) -> AgentLoop:
    tools = {} if tool is None else {tool.name: tool}
    return AgentLoop(TOK, tools, LoopConfig(**{"response_length": 400, **cfg}), ToolTurnFormat(TOK, TOK.chat_template))


def prompt(question="What is 6*7?") -> list[int]:
    text = render(TOK, [{"role": "user", "content": question}], TOK.chat_template,
                  tools=[EchoTool.schema], add_generation_prompt=True)
    return TOK.encode(text, add_special_tokens=False)


async def test_two_turns_match_the_chat_template_token_for_token():
    turn1 = "Let me compute.\n" + call("print(6*7)")
    turn2 = "So it is 42. </reason> <answer>\\boxed{42}</answer>"
    tool = EchoTool()
    traj = await make_loop(tool).run(prompt(), Scripted(turn1, turn2), {"temperature": 1.0})
    conversation = [
        {"role": "user", "content": "What is 6*7?"},
        {"role": "assistant", "content": turn1},
        {"role": "tool", "content": tool.text},
        {"role": "assistant", "content": turn2},
    ]
    rendered = render(TOK, conversation, TOK.chat_template, tools=[EchoTool.schema])
    assert rendered.endswith("<|im_end|>\n")
    assert traj.prompt_ids + traj.response_ids == TOK.encode(rendered[:-1], add_special_tokens=False)
    n1 = len(TOK.encode(turn1, add_special_tokens=False)) + 1
    n2 = len(TOK.encode(turn2, add_special_tokens=False)) + 1
    n_tool = len(traj.response_ids) - n1 - n2
    assert traj.response_mask == [1] * n1 + [0] * n_tool + [1] * n2
    tool_text = TOK.decode(traj.response_ids[n1:n1 + n_tool])
    assert tool_text.startswith("\n<|im_start|>user\n<tool_response>\n") and tool_text.endswith("<reason>")
    s = traj.stats
    assert (s.assistant_turns, s.tool_calls, s.tool_errors, s.parse_errors, s.finish_reason) == (2, 1, 0, 0, "stop")
    assert traj.num_turns == 4 and traj.response_logprobs is None


async def test_budget_is_shared_and_passed_down():
    gen = Scripted("Thinking.\n" + call("print(1)"), "Done. \\boxed{1}")
    traj = await make_loop(EchoTool(), response_length=300).run(prompt(), gen, {"temperature": 0.7})
    first, second = gen.calls[0][2], gen.calls[1][2]
    assert first["max_tokens"] == 300 and first["temperature"] == 0.7
    assert second["max_tokens"] == 300 - (len(gen.calls[1][1]) - len(prompt()))  # the tool turn counts too
    assert gen.calls[1][1] == prompt() + traj.response_ids[: len(gen.calls[1][1]) - len(prompt())]
    assert gen.calls[0][0] == gen.calls[1][0]  # one request id per trajectory (sticky routing)


async def test_length_cut_ends_with_length():
    traj = await make_loop(EchoTool(), response_length=5).run(prompt(), Scripted("a b c d e f g h i j k"), {})
    assert len(traj.response_ids) == 5 and traj.response_mask == [1] * 5
    assert traj.stats.finish_reason == "length"


async def test_tool_turn_that_does_not_fit_is_not_appended():
    turn1 = "Go.\n" + call("print(1)")
    n1 = len(TOK.encode(turn1, add_special_tokens=False)) + 1
    traj = await make_loop(EchoTool(), response_length=n1 + 10).run(prompt(), Scripted(turn1, "x"), {})
    assert traj.stats.finish_reason == "tool_response_too_long"
    assert traj.response_mask == [1] * n1  # ends on the model's turn


async def test_a_full_context_ends_the_trajectory_and_keeps_its_turns():
    turn1 = "Go.\n" + call("print(1)")
    scripted = Scripted(turn1)

    async def generate(request_id, token_ids, params):
        if scripted.calls:  # the second turn no longer fits the served model's context
            raise ContextFull("prompt of 900 tokens fills the model's context of 512")
        return await scripted(request_id, token_ids, params)

    traj = await make_loop(EchoTool()).run(prompt(), generate, {})
    n1 = len(TOK.encode(turn1, add_special_tokens=False)) + 1
    assert traj.stats.finish_reason == "context_full" and traj.stats.assistant_turns == 1
    assert traj.response_mask[:n1] == [1] * n1 and 0 in traj.response_mask  # the turn and its tool output stay
    assert not traj.infra_error


async def test_max_assistant_turns():
    gen = Scripted("Again.\n" + call("print(1)"))
    traj = await make_loop(EchoTool(), max_assistant_turns=3, response_length=4000).run(prompt(), gen, {})
    assert len(gen.calls) == 3 and traj.stats.assistant_turns == 3 and traj.tool_turns == 2
    assert traj.stats.finish_reason == "max_turns" and traj.response_mask[-1] == 1


async def test_parallel_calls_limit_and_concurrency():
    two = "Both.\n" + call("print(1)") + "\n" + call("print(2)")
    tool = EchoTool(delay=0.05)
    traj = await make_loop(tool, max_parallel_calls=1).run(prompt(), Scripted(two, "end"), {})
    assert traj.stats.tool_calls == 1 and traj.stats.skipped_calls == 1
    assert "not run; at most 1 tool call(s) per turn" in TOK.decode(traj.response_ids)
    tool = EchoTool(delay=0.05)
    traj = await make_loop(tool, max_parallel_calls=2).run(prompt(), Scripted(two, "end"), {})
    assert traj.stats.tool_calls == 2 and tool.max_running == 2
    assert TOK.decode(traj.response_ids).count("<tool_response>") == 2


@pytest.mark.parametrize("side,expected", [("left", "ab...(truncated)"), ("right", "(truncated)...yz"),
                                           ("middle", "a...(truncated)...z")])
async def test_tool_output_truncation(side, expected):
    tool = EchoTool(text="ab" + "-" * 100 + "yz")
    traj = await make_loop(tool, max_tool_response_length=2, tool_response_truncate_side=side).run(
        prompt(), Scripted("Go.\n" + call("x"), "end"), {})
    assert f"<tool_response>\n{expected}\n</tool_response>" in TOK.decode(traj.response_ids)


def test_truncate_keeps_short_text():
    assert truncate("abc", 3, "middle") == "abc"


async def test_malformed_unknown_and_failing_calls_are_fed_back():
    bad_json = '<tool_call>\n{"name": "python_code_with_standard_io", "arguments": {"code": }\n</tool_call>'
    unknown = call("print(1)", name="no_such_tool")
    gen = Scripted("Try.\n" + bad_json, "Try.\n" + unknown, "Try.\n" + call("print(1)"), "Give up.")
    tool = EchoTool(text=RuntimeError("judge exploded"))
    traj = await make_loop(tool, response_length=4000).run(prompt(), gen, {})
    text = TOK.decode(traj.response_ids)
    assert traj.stats.parse_errors == 1 and traj.stats.tool_calls == 2 and traj.stats.tool_errors == 2
    assert "unknown tool 'no_such_tool'" in text and "RuntimeError: judge exploded" in text
    assert traj.stats.finish_reason == "stop" and traj.stats.assistant_turns == 4


async def test_history_and_logprobs():
    gen = Scripted("One.\n" + call("a = 1"), "Two.\n" + call("print(a)"), "end", logprobs=True)
    tool = EchoTool()
    traj = await make_loop(tool).run(prompt(), gen, {})
    assert [len(h) for h in tool.histories] == [0, 1] and tool.histories[1][0].arguments["code"] == "a = 1"
    assert len(traj.response_logprobs) == len(traj.response_ids)
    assert all((lp == -0.5) == (m == 1) for lp, m in zip(traj.response_logprobs, traj.response_mask))


async def test_turn_without_eos_gets_the_eos_from_the_tool_turn():
    traj = await make_loop(EchoTool()).run(prompt(), Scripted("Go.\n" + call("x"), "end", eos=False), {})
    first_tool = traj.response_mask.index(0)
    assert traj.response_ids[first_tool] == EOS  # the template's end of the model turn, with mask 0


async def test_real_code_judge_and_python_tool(judge_url):
    from code_judge.client import CodeJudgeClient
    from rstar2_agent.tools import PythonTool

    async with CodeJudgeClient(judge_url) as client:
        tool = PythonTool(client)
        gen = Scripted("Compute.\n" + call("x = 6 * 7\nprint(x)"), "It is \\boxed{42}.")
        traj = await make_loop(tool).run(prompt(), gen, {})
    text = TOK.decode(traj.response_ids)
    assert "<tool_response>\nTool call success\nstdout: 42" in text
    assert traj.stats.tool_errors == 0 and traj.stats.tool_latency_s > 0


async def test_tiny_random_qwen_with_real_tools(judge_url):
    """A real model generates every turn after a scripted first one; turns still line up with the template."""
    from code_judge.client import CodeJudgeClient
    from rstar2_agent.tools import PythonTool

    model_gen = BatchingGenerator(build_model(TOK), TOK)
    first = True

    async def generate(request_id, token_ids, params):
        nonlocal first
        if first:
            first = False
            return Generation(TOK.encode("Use the tool.\n" + call("print(2 + 40)"), add_special_tokens=False) + [EOS])
        return await model_gen(request_id, token_ids, params)

    async with CodeJudgeClient(judge_url) as client:
        loop = make_loop(PythonTool(client), response_length=120)
        traj = await loop.run(prompt(), generate, {"temperature": 1.0})
    assert len(traj.response_ids) == len(traj.response_mask) <= 120
    assert traj.response_mask[0] == 1 and traj.response_mask[-1] == 1 and 0 in traj.response_mask
    decoded = TOK.decode(traj.prompt_ids + traj.response_ids)
    assert "stdout: 42" in decoded and decoded.count("<|im_start|>assistant\n<reason>") == 1 + traj.tool_turns
