"""Tests of rstar2_agent.tools: the tool-call parser, result formatting, the Python and Jupyter tools
(against the real code judge of the `judge_url` fixture) and the verl 0.9.1 adapters."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio

from code_judge.client import CodeJudgeClient
from code_judge.local import free_port
from code_judge.models import Reason, SubmissionResult
from rstar2_agent.tools import (
    JupyterTool,
    PythonTool,
    Tool,
    ToolCall,
    ToolCallError,
    ToolResult,
    format_result,
    parse_tool_calls,
)
from rstar2_agent.tools.parser import split_tool_calls
from rstar2_agent.tools.python_tool import PYTHON_TOOL_SCHEMA, JudgeRetry, build_program
from rstar2_agent.tools.jupyter_tool import JUPYTER_TOOL_SCHEMA

PREFIX = "Failed to parse tool call: "
TOOL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "rstar2_agent" / "config" / "tool_config"
PY = "python_code_with_standard_io"


def block(payload) -> str:
    body = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def errors_of(items):
    return [i for i in items if isinstance(i, ToolCallError)]


# ============================================================================================ parser: good calls


@pytest.mark.parametrize(
    "text",
    ["", "just reasoning, no calls", "I will use tool_call later", "<tool_call", "tool_call>", "<tool_calls>{}"],
)
def test_parser_text_without_tags_gives_nothing(text):
    assert parse_tool_calls(text) == []


def test_parser_single_call():
    text = 'Let me compute.\n<tool_call>\n{"name": "python_code_with_standard_io", "arguments": {"code": "print(1)", "input": ""}}\n</tool_call>'
    assert parse_tool_calls(text) == [ToolCall(PY, {"code": "print(1)", "input": ""})]


def test_parser_multiple_calls_in_order_with_text_between():
    text = (
        "first " + block({"name": "a", "arguments": {"i": 1}})
        + " then some thinking {not json} "
        + block({"name": "b", "arguments": {"i": 2}})
        + "\n" + block({"name": "a", "arguments": {"i": 3}}) + " done"
    )
    assert parse_tool_calls(text) == [
        ToolCall("a", {"i": 1}),
        ToolCall("b", {"i": 2}),
        ToolCall("a", {"i": 3}),
    ]


def test_parser_whitespace_and_newlines_inside_tags():
    text = '<tool_call>  \n\t\r\n {\n  "name" :\n "t",\n\n "arguments" : {\n "x": "a\\nb" }\n}\n\n \t</tool_call>'
    assert parse_tool_calls(text) == [ToolCall("t", {"x": "a\nb"})]
    # and no whitespace at all
    assert parse_tool_calls('<tool_call>{"name":"t","arguments":{}}</tool_call>') == [ToolCall("t", {})]


def test_parser_nested_braces_and_brackets_in_code_strings():
    code = 'd = {"a": {"b": [1, {2: 3}]}}\nprint(f"{d[\'a\']} }}{{ ]][[")\nx = "}" + "{"'
    nested_args = {"code": code, "input": "{}", "opts": {"deep": {"er": [{"x": {}}]}}}
    items = parse_tool_calls(block({"name": PY, "arguments": nested_args}))
    assert items == [ToolCall(PY, nested_args)]


def test_parser_tags_inside_json_strings_do_not_cut_the_call():
    code = 'print("</tool_call>")\nprint("<tool_call>")'
    text = block({"name": PY, "arguments": {"code": code}}) + " after " + block({"name": "b", "arguments": {}})
    assert parse_tool_calls(text) == [ToolCall(PY, {"code": code}), ToolCall("b", {})]


def test_parser_unicode():
    args = {"code": "print('π ≈ 3.14159, 你好, 🚀')", "input": "ünïcødé"}
    raw_unicode = block({"name": PY, "arguments": args})  # characters as-is
    escaped = block(json.dumps({"name": PY, "arguments": args}, ensure_ascii=True))  # \\u escapes
    assert parse_tool_calls(raw_unicode) == [ToolCall(PY, args)]
    assert parse_tool_calls(escaped) == [ToolCall(PY, args)]
    assert parse_tool_calls("前言 " + raw_unicode + " 结语") == [ToolCall(PY, args)]


def test_parser_arguments_as_json_string_holding_an_object_is_accepted():
    inner = json.dumps({"code": "print(2)", "input": ""})
    assert parse_tool_calls(block({"name": PY, "arguments": inner})) == [
        ToolCall(PY, {"code": "print(2)", "input": ""})
    ]


def test_parser_extra_keys_are_ignored_and_known_names_accepted():
    text = block({"name": PY, "arguments": {"code": "1"}, "id": "call_0"})
    assert parse_tool_calls(text, tool_names=[PY, "jupyter_code"]) == [ToolCall(PY, {"code": "1"})]


def test_tool_call_and_error_are_frozen():
    call = ToolCall("a", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.name = "b"  # type: ignore[misc]
    err = ToolCallError("m", "r")
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.message = "x"  # type: ignore[misc]


# ============================================================================================ parser: errors


def test_parser_invalid_json_message_is_exact():
    body = '{"n": "xy" "b"}'
    items = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert items == [
        ToolCallError(
            PREFIX + "invalid JSON (Expecting ',' delimiter: line 1 column 12)",
            f"<tool_call>{body}</tool_call>",
        )
    ]


def test_parser_invalid_json_positions_ignore_surrounding_whitespace():
    items = parse_tool_calls('<tool_call>\n\n   {"name": "x", "arguments": {\'code\': 1}}\n</tool_call>')
    assert items == [
        ToolCallError(
            PREFIX + "invalid JSON (Expecting property name enclosed in double quotes: line 1 column 29)",
            '<tool_call>\n\n   {"name": "x", "arguments": {\'code\': 1}}\n</tool_call>',
        )
    ]


def test_parser_trailing_garbage_after_json_is_an_error():
    items = parse_tool_calls('<tool_call>{"name": "x", "arguments": {}} oops</tool_call>')
    assert len(items) == 1 and isinstance(items[0], ToolCallError)
    assert items[0].message.startswith(PREFIX + "invalid JSON (Extra data")


@pytest.mark.parametrize(
    "payload, expected",
    [
        ("[1, 2]", 'expected a JSON object with "name" and "arguments", got array'),
        ('"python"', 'expected a JSON object with "name" and "arguments", got string'),
        ("42", 'expected a JSON object with "name" and "arguments", got number'),
        ("null", 'expected a JSON object with "name" and "arguments", got null'),
        ('{"arguments": {"code": "1"}}', 'missing "name"'),
        ('{"name": 7, "arguments": {}}', '"name" must be a string, got number'),
        ('{"name": null, "arguments": {}}', '"name" must be a string, got null'),
        ('{"name": "  ", "arguments": {}}', '"name" is empty'),
        ('{"name": "t"}', 'missing "arguments" in call to "t"'),
        ('{"name": "t", "arguments": [1]}', '"arguments" of "t" must be a JSON object, got array'),
        ('{"name": "t", "arguments": 3}', '"arguments" of "t" must be a JSON object, got number'),
        ('{"name": "t", "arguments": null}', '"arguments" of "t" must be a JSON object, got null'),
        ('{"name": "t", "arguments": true}', '"arguments" of "t" must be a JSON object, got boolean'),
        (
            '{"name": "t", "arguments": "[1, 2]"}',
            '"arguments" of "t" must be a JSON object, got a string holding array',
        ),
        (
            '{"name": "t", "arguments": "print(1)"}',
            '"arguments" of "t" must be a JSON object, got a string that is not valid JSON',
        ),
        ("", "empty <tool_call> block"),
        ("   \n  ", "empty <tool_call> block"),
    ],
)
def test_parser_bad_payloads_become_errors(payload, expected):
    text = f"before <tool_call>{payload}</tool_call> after"
    items = parse_tool_calls(text)
    assert items == [ToolCallError(PREFIX + expected, f"<tool_call>{payload}</tool_call>")]


def test_parser_unknown_tool_names_only_when_names_given():
    text = block({"name": "search", "arguments": {"q": "x"}}) + block({"name": PY, "arguments": {"code": "1"}})
    assert parse_tool_calls(text) == [ToolCall("search", {"q": "x"}), ToolCall(PY, {"code": "1"})]
    items = parse_tool_calls(text, tool_names={PY, "jupyter_code"})
    assert items[1] == ToolCall(PY, {"code": "1"})
    assert isinstance(items[0], ToolCallError)
    assert items[0].message == (
        PREFIX + 'unknown tool "search" (available tools: "jupyter_code", "python_code_with_standard_io")'
    )
    # an empty collection means "no tool is known"
    assert all(isinstance(i, ToolCallError) for i in parse_tool_calls(text, tool_names=()))


def test_parser_unclosed_call():
    good = block({"name": "a", "arguments": {}})
    tail = '<tool_call>\n{"name": "b", "arguments": {"code": "print(1)"}}'
    items = parse_tool_calls("think " + good + " more " + tail)
    assert items == [ToolCall("a", {}), ToolCallError(PREFIX + "<tool_call> has no matching </tool_call>", tail)]
    # truncated mid-JSON (the response hit the length limit)
    items = parse_tool_calls('<tool_call>{"name": "b", "argu')
    assert items == [ToolCallError(PREFIX + "<tool_call> has no matching </tool_call>", '<tool_call>{"name": "b", "argu')]


def test_parser_opening_tag_not_closed_before_the_next_one():
    broken = '<tool_call>{"name": "a", '
    good = block({"name": "b", "arguments": {"x": 1}})
    items = parse_tool_calls(broken + good)
    assert items == [
        ToolCallError(PREFIX + "<tool_call> is not closed before the next <tool_call>", broken),
        ToolCall("b", {"x": 1}),
    ]
    # two openings, no closing at all
    items = parse_tool_calls("<tool_call>{<tool_call>{")
    assert [type(i) for i in items] == [ToolCallError, ToolCallError]
    assert items[0].raw == "<tool_call>{" and items[1].raw == "<tool_call>{"
    assert "not closed before the next" in items[0].message and "no matching" in items[1].message


def test_parser_stray_closing_tag_is_an_error():
    items = parse_tool_calls('{"name": "a", "arguments": {}}</tool_call> and more text')
    assert items == [ToolCallError(PREFIX + "found </tool_call> without a preceding <tool_call>", "</tool_call>")]
    good = block({"name": "a", "arguments": {}})
    items = parse_tool_calls(good + "</tool_call>" + good)
    assert [type(i) for i in items] == [ToolCall, ToolCallError, ToolCall]


def test_parser_errors_keep_their_position_among_good_calls():
    text = (
        block({"name": "a", "arguments": {}})
        + "<tool_call>{bad}</tool_call>"
        + block({"name": "b", "arguments": {}})
        + block('{"name": "c"}')
    )
    items = parse_tool_calls(text)
    assert [type(i).__name__ for i in items] == ["ToolCall", "ToolCallError", "ToolCall", "ToolCallError"]
    assert items[0].name == "a" and items[2].name == "b"
    assert items[1].raw == "<tool_call>{bad}</tool_call>"


def test_parser_absurdly_deep_json_is_an_error_not_a_crash():
    deep = "[" * 200_000 + "]" * 200_000
    items = parse_tool_calls(f"<tool_call>{deep}</tool_call>")
    assert len(items) == 1 and isinstance(items[0], ToolCallError)
    assert items[0].message.startswith(PREFIX)


def test_parser_never_raises_on_random_fragments():
    fragments = [
        "<tool_call>", "</tool_call>", "<tool_", "call>", "{", "}", "[", "]", '"', "\\", ":", ",", " ", "\n",
        '"name"', '"arguments"', '"code"', '"x"', "1", "null", "π", '{"name": "a", "arguments": {}}',
    ]
    rng = random.Random(1234)
    for _ in range(3000):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 25)))
        items = parse_tool_calls(text, tool_names=["a"] if rng.random() < 0.5 else None)
        n_tags = text.count("<tool_call>") + text.count("</tool_call>")
        if n_tags == 0:
            assert items == []
        else:
            assert items, text  # something with a tag is never silently empty
        for item in items:
            assert isinstance(item, (ToolCall, ToolCallError))
            if isinstance(item, ToolCallError):
                assert item.message.startswith(PREFIX) and item.raw and item.raw in text


def test_split_tool_calls_cuts_every_block_out():
    good = block({"name": "a", "arguments": {}})
    content, items = split_tool_calls("A" + good + "B<tool_call>{x}</tool_call>C</tool_call>D<tool_call>{")
    assert content == "ABCD"
    assert [type(i) for i in items] == [ToolCall, ToolCallError, ToolCallError, ToolCallError]


# ============================================================================================ formatting


def result(**kw) -> SubmissionResult:
    base = {"success": True, "run_success": True, "cost": 0.0, "stdout": "", "stderr": "", "reason": ""}
    base.update(kw)
    return SubmissionResult(**base)


def test_format_success_with_output():
    text = format_result(result(stdout="42\n", stderr="warn\n", cost=0.1234))
    assert text == "Tool call success\nstdout: 42\n\nstderr: warn\n\nexecution time: 0.12s"


def test_format_success_without_output_has_only_time():
    assert format_result(result(cost=1.0)) == "Tool call success\nexecution time: 1.00s"


def test_format_plain_nonzero_exit_has_empty_reason():
    text = format_result(result(success=False, run_success=False, stdout="partial", stderr="Boom", cost=2.345))
    assert text == "Tool call failure\nreason: \nstdout: partial\nstderr: Boom\nexecution time: 2.35s"


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.NONE])
def test_format_failure_names_the_reason(reason):
    text = format_result(result(success=False, run_success=False, reason=reason.value, cost=3))
    assert text == f"Tool call failure\nreason: {reason.value}\nexecution time: 3.00s"


def test_format_ran_but_not_judged_successful_is_a_failure():
    # run_success without success (an expected output did not match) is still shown as a failure
    text = format_result(result(success=False, run_success=True, stdout="1\n"))
    assert text.startswith("Tool call failure\nreason: \nstdout: 1\n")


# ============================================================================================ program driver (local)


def run_locally(code: str, history=(), stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", build_program(code, history)], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_driver_echo_and_errors_locally():
    p = run_locally("x = int(input())\nx * 2", stdin="21\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, "42\n", "")
    p = run_locally("def f():\n    return 1 / 0\nf()")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == "ZeroDivisionError at line 2: division by zero\n  return 1 / 0\n"
    p = run_locally("x = 1\nreturn x")
    assert p.returncode == 1 and p.stderr == "SyntaxError at line 2: 'return' outside function\n  return x\n"
    p = run_locally("import sys\nsys.exit(3)")
    assert p.returncode == 3 and p.stderr == ""


def test_driver_runs_code_as_main_module_without_driver_names():
    code = textwrap.dedent(
        """
        import pickle
        def g():
            return 7
        if __name__ == "__main__":
            print(pickle.loads(pickle.dumps(g))())
        sorted(k for k in globals() if "rstar2" in k)
        """
    )
    p = run_locally(code)
    assert (p.returncode, p.stdout) == (0, "7\n[]\n")


def test_driver_replay_discards_output_even_at_fd_level():
    history = ["import os\nos.write(1, b'FD-LEAK\\n')\nprint('PY-LEAK')\nimport sys\nprint('E', file=sys.stderr)\nv = 3"]
    p = run_locally("v", history)
    assert (p.returncode, p.stdout, p.stderr) == (0, "3\n", "")


def test_driver_transports_any_text_unchanged():
    s = "quotes ' \" ''' \"\"\" backslash \\ \\n tab\t π 🚀 \x00 end"
    p = run_locally(f"s = {s!r}\nprint(len(s), ascii(s))")
    assert p.returncode == 0 and p.stdout == f"{len(s)} {ascii(s)}\n"


# ============================================================================================ tools on the real judge


@pytest_asyncio.fixture(loop_scope="function")
async def client(judge_url):
    async with CodeJudgeClient(judge_url) as c:
        yield c


def test_tools_satisfy_the_protocol_and_expose_schemas():
    dummy = CodeJudgeClient("http://127.0.0.1:9")
    py, jp = PythonTool(dummy), JupyterTool(dummy)
    assert isinstance(py, Tool) and isinstance(jp, Tool)
    assert py.name == PY == py.schema["function"]["name"] and py.schema == PYTHON_TOOL_SCHEMA
    assert jp.name == "jupyter_code" == jp.schema["function"]["name"] and jp.schema == JUPYTER_TOOL_SCHEMA
    props = py.schema["function"]["parameters"]
    assert props["required"] == ["code", "input"] and set(props["properties"]) == {"code", "input"}
    assert "input" in py.schema["function"]["description"] and "output" in py.schema["function"]["description"]
    assert jp.schema["function"]["parameters"]["required"] == ["code"]
    renamed = PythonTool(dummy, name="execute_python_code_with_standard_io")
    assert renamed.schema["function"]["name"] == "execute_python_code_with_standard_io"
    assert PYTHON_TOOL_SCHEMA["function"]["name"] == PY  # the module constant was not modified


async def test_python_tool_feeds_stdin(client):
    tool = PythonTool(client)
    res = await tool.execute({"code": "a, b = map(int, input().split())\nc = int(input())\nprint(a + b + c)", "input": "2 3\n10\n"})
    assert isinstance(res, ToolResult) and res.success
    assert res.text.startswith("Tool call success\nstdout: 15\n\nexecution time: ")
    assert res.text.endswith("s") and res.latency_s > 0


async def test_python_tool_missing_input_is_empty_stdin(client):
    tool = PythonTool(client)
    res = await tool.execute({"code": "import sys\nprint(repr(sys.stdin.read()))"})
    assert res.success and "stdout: ''\n" in res.text
    res = await tool.execute({"code": "input()"})  # no stdin at all -> EOFError, reported compactly
    assert not res.success and "stderr: EOFError at line 1: EOF when reading a line\n  input()" in res.text


async def test_python_tool_echoes_last_expression(client):
    tool = PythonTool(client)
    cases = [
        ("x = 6 * 7\nx", "42\n"),
        ("'abc'", "'abc'\n"),
        ("import math\nmath.sqrt(16)", "4.0\n"),
        ("print('only once')", "only once\n"),  # print returns None: nothing echoed
        ("y = 5", ""),  # last statement is not an expression
        ("None", ""),
        ("[i * i for i in range(4)]", "[0, 1, 4, 9]\n"),
        ("def f():\n    return {'k': 1}\nf()", "{'k': 1}\n"),
    ]
    results = await asyncio.gather(*(tool.execute({"code": code, "input": ""}) for code, _ in cases))
    for (code, expected), res in zip(cases, results):
        assert res.success, (code, res.text)
        if expected:
            assert res.text.startswith(f"Tool call success\nstdout: {expected}\nexecution time: "), (code, res.text)
        else:
            assert res.text.startswith("Tool call success\nexecution time: "), (code, res.text)


async def test_python_tool_reports_errors_compactly(client):
    tool = PythonTool(client)
    res = await tool.execute({"code": "print('before')\nvalue = 10\nvalue / 0\nprint('after')", "input": ""})
    assert not res.success
    assert res.text.startswith("Tool call failure\nreason: \nstdout: before\n\nstderr: ZeroDivisionError at line 3: division by zero\n  value / 0\n")
    assert "after" not in res.text and "Traceback" not in res.text

    res = await tool.execute({"code": "def f(:\n    pass", "input": ""})
    assert not res.success and "stderr: SyntaxError at line 1: " in res.text and "def f(:" in res.text

    res = await tool.execute({"code": "d = {}\nd['missing']", "input": ""})
    assert "stderr: KeyError at line 2: 'missing'\n  d['missing']" in res.text


async def test_python_tool_timeout_names_the_reason(client):
    res = await PythonTool(client).execute({"code": "while True:\n    pass", "input": ""})
    assert not res.success and res.text.startswith("Tool call failure\nreason: worker_timeout\n")


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"code": 5, "input": ""}, '"code" must be a string, got number'),
        ({"code": ["print(1)"], "input": ""}, '"code" must be a string, got array'),
        ({"input": "1"}, 'missing required argument "code"'),
        ({"code": None}, 'missing required argument "code"'),
        ({"code": "print(1)", "input": 3}, '"input" must be a string, got number'),
        ({"code": "print(1)", "input": {"a": 1}}, '"input" must be a string, got object'),
        (["print(1)"], "arguments must be a JSON object, got array"),
    ],
)
async def test_python_tool_rejects_wrong_argument_types_without_calling_the_judge(arguments, problem):
    probe = CodeJudgeClient("http://127.0.0.1:9", max_retries=0)
    try:
        res = await PythonTool(probe).execute(arguments)
    finally:
        await probe.aclose()
    assert res == ToolResult(text=f"Tool call failure\nreason: invalid arguments: {problem}", success=False, latency_s=res.latency_s)
    assert probe.stats.requests == 0


async def test_tools_survive_a_judge_outage():
    dead = CodeJudgeClient(f"http://127.0.0.1:{free_port()}", max_retries=1, backoff_s=0.01, timeout_s=5)
    try:
        retry = JudgeRetry(attempts=2, backoff_s=0.01)
        for tool, args in ((PythonTool(dead, retry=retry), {"code": "print(1)", "input": ""}),
                           (JupyterTool(dead, retry=retry), {"code": "1"})):
            res = await tool.execute(args, [ToolCall("jupyter_code", {"code": "x = 1"})])
            assert res.success is False and res.infra_error is True  # the sandbox's fault, not the model's
            assert res.text.startswith("Tool call failure\nreason: code judge error: ")
            assert "after 2 attempts" in res.text
        assert dead.stats.requests == 8  # 2 tries of the call x 2 client attempts each: the tools really tried
    finally:
        await dead.aclose()


async def test_python_tool_concurrent_calls_get_their_own_results(client):
    tool = PythonTool(client)
    results = await asyncio.gather(*(tool.execute({"code": "n = int(input())\nn * n", "input": f"{i}\n"}) for i in range(20)))
    for i, res in enumerate(results):
        assert res.success and res.text.startswith(f"Tool call success\nstdout: {i * i}\n\n"), res.text


async def test_jupyter_tool_replays_history(client):
    tool = JupyterTool(client)
    cell1 = "x = 41\nprint('setup output')"
    first = await tool.execute({"code": cell1})
    assert first.success and "stdout: setup output" in first.text
    history = [ToolCall("jupyter_code", {"code": cell1})]
    second = await tool.execute({"code": "x + 1"}, history)
    assert second.success and second.text.startswith("Tool call success\nstdout: 42\n\nexecution time: ")
    assert "setup output" not in second.text

    alone = await tool.execute({"code": "x + 1"})  # no history: the state is really rebuilt from it
    assert not alone.success and "NameError at line 1: name 'x' is not defined" in alone.text


async def test_jupyter_tool_history_semantics(client):
    tool = JupyterTool(client)
    history = [
        ToolCall("jupyter_code", {"code": "import math\ndef f(n):\n    return math.factorial(n)"}),
        ToolCall(PY, {"code": "other_tool_var = 1", "input": ""}),  # another tool: not replayed
        ToolCall("jupyter_code", {"code": "y = 2\nraise RuntimeError('boom')\nz = 3"}),  # error ignored, y kept
        ToolCall("jupyter_code", {"code": 123}),  # not a string: skipped
        ToolCall("jupyter_code", {"code": "counter = 10"}),
        ToolCall("jupyter_code", {"code": "counter += 1"}),  # order matters
    ]
    before = client.stats.items
    res = await tool.execute({"code": "(f(5), y, counter)"}, history)
    assert client.stats.items - before == 1  # one judge submission per execute
    assert res.success and "stdout: (120, 2, 11)\n" in res.text and "boom" not in res.text

    for name, missing in (("z", "z"), ("other_tool_var", "other_tool_var")):
        res = await tool.execute({"code": name}, history)
        assert not res.success and f"NameError at line 1: name '{missing}' is not defined" in res.text


async def test_jupyter_tool_error_in_new_cell_is_reported(client):
    tool = JupyterTool(client)
    history = [ToolCall("jupyter_code", {"code": "def g(v):\n    return 10 // v"})]
    res = await tool.execute({"code": "a = 1\ng(0)"}, history)
    assert not res.success
    assert "stderr: ZeroDivisionError at line 2: integer division or modulo by zero\n  g(0)" in res.text


# ============================================================================================ verl adapters


def _verl():
    return pytest.importorskip("verl")


class CharTokenizer:
    """The smallest tokenizer the parser needs: one id per character."""

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids, **kwargs):
        return "".join(chr(i) for i in ids)


@pytest.mark.parametrize(
    "filename, cls_name, tool_name, schema",
    [
        ("python_tool_config.yaml", "VerlPythonTool", PY, PYTHON_TOOL_SCHEMA),
        ("jupyter_tool_config.yaml", "VerlJupyterTool", "jupyter_code", JUPYTER_TOOL_SCHEMA),
    ],
)
def test_tool_yaml_loads_with_verls_loader(filename, cls_name, tool_name, schema):
    _verl()
    from verl.tools.base_tool import BaseTool
    from verl.tools.tool_registry import initialize_tools_from_config

    tools = initialize_tools_from_config(str(TOOL_CONFIG_DIR / filename))
    assert len(tools) == 1
    tool = tools[0]
    assert isinstance(tool, BaseTool) and type(tool).__name__ == cls_name
    assert tool.name == tool_name
    assert tool.get_openai_tool_schema().function.name == tool_name
    # the yaml and the Python schema say the same thing (the yaml is what the model sees in training)
    assert tool.tool_schema.model_dump(exclude_unset=True, exclude_none=True) == schema
    assert tool.base_url == "http://localhost:8088"
    assert tool.client_kwargs == {"max_batch_size": 32, "max_concurrency": 8}


def test_verl_client_settings_from_config():
    _verl()
    from rstar2_agent.tools.verl_tools import client_settings_from_config

    assert client_settings_from_config({"type": "native"}) == ("http://localhost:8088", {})
    assert client_settings_from_config({"host_addr": "10.1.2.3", "host_port": "9000"})[0] == "http://10.1.2.3:9000"
    assert client_settings_from_config({"host_addr": "https://judge.example/", "host_port": 443})[0] == "https://judge.example:443"
    url, kwargs = client_settings_from_config(
        {
            "url": "http://judge:1234", "host_addr": "ignored", "request_processor_batch_size": "24",
            "request_processor_concurrency": 16, "request_processor_batch_timeout_seconds": 30,
            "max_retries": 2, "timeout_s": "60",
        }
    )
    assert url == "http://judge:1234"
    assert kwargs == {"max_batch_size": 24, "max_concurrency": 16, "max_retries": 2, "timeout_s": 60.0}
    # the client really accepts them
    CodeJudgeClient(url, **kwargs)


async def test_verl_python_tool_runs_on_the_judge(judge_url):
    _verl()
    from verl.tools.schemas import ToolResponse

    from rstar2_agent.tools.verl_tools import VerlPythonTool

    tool = VerlPythonTool({"type": "native", "url": judge_url, "request_processor_batch_size": 4})
    try:
        assert tool.name == PY
        instance_id, created = await tool.create()
        assert isinstance(instance_id, str) and isinstance(created, ToolResponse)
        response, reward, metrics = await tool.execute(instance_id, {"code": "int(input()) + 1", "input": "2"})
        assert isinstance(response, ToolResponse) and response.text.startswith("Tool call success\nstdout: 3\n")
        assert reward == 0.0 and metrics["success"] is True and metrics["latency_s"] > 0
        response, _, metrics = await tool.execute(instance_id, {"code": 1})
        assert metrics["success"] is False and response.text.startswith("Tool call failure\nreason: invalid arguments")
        await tool.release(instance_id)
        await tool.release("never-created")  # unknown ids are fine
        assert tool._client.max_batch_size == 4
        # the same tool under our own Tool protocol, for our agent loop
        inner = tool.rstar2_tool
        assert isinstance(inner, Tool) and inner.name == PY and inner.schema == PYTHON_TOOL_SCHEMA
        res = await inner.execute({"code": "input()[::-1]", "input": "abc"})
        assert isinstance(res, ToolResult) and res.success and "stdout: 'cba'\n" in res.text
    finally:
        await tool.aclose()


def test_verl_tool_closes_the_client_of_a_loop_it_leaves(judge_url):
    """A tool used from a second event loop makes a new judge client there and closes the first one on its own
    loop (a client's batcher task and connections belong to the loop that made them)."""
    import threading

    _verl()
    from rstar2_agent.tools.verl_tools import VerlPythonTool

    tool = VerlPythonTool({"type": "native", "url": judge_url})
    first_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=first_loop.run_forever, daemon=True)
    thread.start()
    try:
        run = asyncio.run_coroutine_threadsafe(tool.rstar2_tool.execute({"code": "print(1)", "input": ""}), first_loop)
        assert run.result(timeout=60).success
        first = tool._client

        async def elsewhere():
            result = await tool.rstar2_tool.execute({"code": "print(2)", "input": ""})
            await asyncio.sleep(0.2)  # let the first loop run the close
            return result

        assert asyncio.run(elsewhere()).success
        assert tool._client is not first and first._closed
    finally:
        first_loop.call_soon_threadsafe(first_loop.stop)
        thread.join(timeout=10)


async def test_verl_jupyter_tool_history_from_agent_data(judge_url):
    _verl()
    from rstar2_agent.tools.verl_tools import VerlJupyterTool

    tool = VerlJupyterTool({"type": "native", "url": judge_url})

    def assistant(code):
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "jupyter_code", "arguments": {"code": code}}}],
        }

    current = "v = v + 1\nv"
    agent_data = SimpleNamespace(
        messages=[
            {"role": "user", "content": "q"},
            assistant("v = 10"),
            {"role": "tool", "content": "Tool call success"},
            assistant(current),  # the turn being executed: must not be replayed as history
        ]
    )
    try:
        instance_id, _ = await tool.create(create_kwargs={})
        response, _, metrics = await tool.execute(instance_id, {"code": current}, agent_data=agent_data)
        assert metrics["success"] and "stdout: 11\n" in response.text, response.text
        await tool.release(instance_id)
    finally:
        await tool.aclose()


async def test_verl_jupyter_tool_history_from_create_and_execute_kwargs(judge_url):
    _verl()
    from verl.experimental.agent_loop.tool_parser import FunctionCall

    from rstar2_agent.tools.verl_tools import VerlJupyterTool

    tool = VerlJupyterTool({"type": "native", "url": judge_url})
    try:
        stored = [FunctionCall(name="jupyter_code", arguments='{"code": "w = 5"}')]
        instance_id, _ = await tool.create(history_tool_calls=stored)
        response, _, _ = await tool.execute(instance_id, {"code": "w * 3"}, agent_data=SimpleNamespace(messages=[]))
        assert "stdout: 15\n" in response.text, response.text
        # an explicit execute kwarg wins over what create stored
        response, _, _ = await tool.execute(
            instance_id, {"code": "w * 3"}, history_tool_calls=[{"name": "jupyter_code", "arguments": {"code": "w = 7"}}]
        )
        assert "stdout: 21\n" in response.text, response.text
        await tool.release(instance_id)
        # our Tool view takes the history directly (ToolCall or verl FunctionCall items)
        res = await tool.rstar2_tool.execute({"code": "w + 1"}, [ToolCall("jupyter_code", {"code": "w = 1"}), *stored])
        assert res.success and "stdout: 6\n" in res.text, res.text
    finally:
        await tool.aclose()


def test_verl_parser_is_registered_on_import():
    _verl()
    from verl.experimental.agent_loop.tool_parser import ToolParser

    from rstar2_agent.tools.verl_parser import PARSER_NAME, RStar2AgentHermesToolParser

    assert PARSER_NAME == "rstar2_agent_hermes"
    parser = ToolParser.get_tool_parser("rstar2_agent_hermes", CharTokenizer())
    assert isinstance(parser, RStar2AgentHermesToolParser)


async def test_verl_parser_extracts_calls_and_errors():
    _verl()
    from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
    from verl.tools.schemas import OpenAIFunctionToolSchema

    from rstar2_agent.tools.verl_parser import PARSE_ERROR_TOOL_NAME, error_message

    assert PARSE_ERROR_TOOL_NAME == "__tool_call_error__"
    tok = CharTokenizer()
    parser = ToolParser.get_tool_parser("rstar2_agent_hermes", tok)
    text = (
        "<reason>let me run π code "
        + block({"name": PY, "arguments": {"code": "print('π')", "input": ""}})
        + " and <tool_call>{\"name\": \"x\" \"arguments\": {}}</tool_call>"
        + block({"name": "search", "arguments": {"q": 1}})
        + " end"
    )
    content, calls = await parser.extract_tool_calls(tok.encode(text))
    assert content == "<reason>let me run π code  and  end"
    assert [c.name for c in calls] == [PY, PARSE_ERROR_TOOL_NAME, "search"]
    assert isinstance(calls[0], FunctionCall)
    assert calls[0].arguments == json.dumps({"code": "print('π')", "input": ""}, ensure_ascii=False)
    assert "π" in calls[0].arguments  # not \u escaped
    assert error_message(calls[1]) == PREFIX + "invalid JSON (Expecting ',' delimiter: line 1 column 14)"
    assert json.loads(calls[1].arguments) == {"message": error_message(calls[1])}
    assert error_message(calls[0]) is None

    # with verl's tool schemas, unknown tool names become errors too
    schemas = [OpenAIFunctionToolSchema.model_validate(PYTHON_TOOL_SCHEMA)]
    _, calls = await parser.extract_tool_calls(tok.encode(text), schemas)
    assert [c.name for c in calls] == [PY, PARSE_ERROR_TOOL_NAME, PARSE_ERROR_TOOL_NAME]
    assert 'unknown tool "search"' in error_message(calls[2])

    _, calls = await parser.extract_tool_calls(tok.encode("no calls here </tool_calls>"))
    assert calls == []


def test_importing_the_tools_package_does_not_import_verl():
    code = "import sys, rstar2_agent.tools as t; t.PythonTool; print('verl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
