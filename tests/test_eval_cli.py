"""`rstar2-agent eval` end to end, through the real code judge (the session's `judge_url`):

* a tiny transformers model in process (`--model-dir`), and resuming after an interrupted run;
* a scripted OpenAI-compatible server (stdlib, in a thread) that calls the Python tool and boxes what it
  printed, so the score comes from real execution; it refuses token-id prompts, so the text fallback runs;
* bad servers: a refused connection, 500s and a hang each give a clear error within a bounded time, and the
  trajectories finished before stay in the JSONL (a rerun resumes them);
* the protocol against a real completions server serving the tiny model (`python3 -m rstar2_agent.eval.server`
  in a subprocess: token-id prompts, token ids back), and against `vllm serve` where vLLM is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from code_judge.local import free_port
from conftest import start_server, stop_server
from rstar2_agent.cli import main as cli_main
from rstar2_agent.verl_cpu.models import save_tiny

COMMON = ["--no-progress", "--max-retries", "1", "--request-timeout", "120"]  # generous: CI shares 2 cores


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return save_tiny(str(tmp_path_factory.mktemp("eval") / "tiny"), seed=3)


def records(out: Path) -> list[dict]:
    """The whole lines of the output JSONL (a line cut by a kill is skipped, as a resume skips it)."""
    from rstar2_agent.eval.output import read_records

    return read_records(out / "trajectories.jsonl")


def run_eval(*argv: str) -> None:
    cli_main(["eval", *argv])


# ------------------------------------------------------------------------------------------- in process


def test_model_dir_end_to_end_then_resume(tiny, tmp_path, judge_url, capsys):
    out = tmp_path / "run"
    argv = ["--data", "bundled", "--limit", "3", "--n", "2", "--model-dir", tiny, "--max-tokens", "24",
            "--judge-url", judge_url, "--output", str(out), "--concurrency", "6", "--backend", "hf", *COMMON]
    run_eval(*argv)
    first = records(out)
    assert sorted((r["problem_index"], r["sample"]) for r in first) == [(i, k) for i in range(3) for k in range(2)]
    for r in first:
        assert r["prompt"].startswith("<|im_start|>system") and "python_code_with_standard_io" in r["prompt"]
        assert r["turns"][0]["role"] == "assistant" and r["score"] in (0.0, 1.0)
        assert r["finish_reason"] in ("stop", "length", "max_turns", "tool_response_too_long")
        assert 0 < r["response_length"] <= 24 and r["ground_truth"] and r["data_source"].startswith("bundled/")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["all"]["trajectories"] == 6 and summary["all"]["problems"] == 3
    assert {"avg@2", "pass@2", "maj@2", "tool_calls_per_traj", "tool_error_ratio", "response_length",
            "finish_reasons"} <= set(summary["all"])
    table = capsys.readouterr().out
    assert "avg@2" in table and "bundled/product" in table

    # interrupted: two whole lines and a third cut by the kill; the rerun generates only the four missing pairs
    lines = (out / "trajectories.jsonl").read_text().splitlines(keepends=True)
    (out / "trajectories.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    run_eval(*argv)
    err = capsys.readouterr().err
    assert "resuming: 2 of 6 trajectories already in" in err and "4 to run" in err
    after = (out / "trajectories.jsonl").read_text().splitlines(keepends=True)
    assert after[:2] == lines[:2]  # the finished ones are kept as they were, not run again
    again = records(out)[2:]
    assert len(again) == 4
    assert sorted((r["problem_index"], r["sample"]) for r in again) == \
        sorted({(i, k) for i in range(3) for k in range(2)} - {(r["problem_index"], r["sample"]) for r in first[:2]})
    assert json.loads((out / "summary.json").read_text())["all"]["trajectories"] == 6

    # a rerun with other settings into the same folder is refused
    with pytest.raises(SystemExit, match="other settings"):
        run_eval(*argv, "--temperature", "0.2")


def test_a_folder_of_another_data_set_is_refused(tmp_path):
    from rstar2_agent.eval.data import EvalItem
    from rstar2_agent.eval.output import RunFolder

    folder = RunFolder(tmp_path)
    folder.append({"problem_index": 0, "sample": 0, "problem": "What is 1 + 1?", "score": 1.0})
    folder.append({"problem_index": 0, "sample": 1, "problem": "What is 1 + 1?", "score": 0.0, "infra_error": True})
    assert list(folder.finished([EvalItem(0, "What is 1 + 1?", "2", "s")], n=2)) == [(0, 0)]  # infra: run again
    assert folder.finished([EvalItem(0, "What is 1 + 1?", "2", "s")], n=1).keys() == {(0, 0)}
    with pytest.raises(ValueError, match="another data set"):
        folder.finished([EvalItem(0, "What is 2 + 2?", "4", "s")], n=2)


# ------------------------------------------------------------------------------------ scripted servers


class Scripted:
    """A completions server in a thread. mode: ok (a tool call, then the box of what it printed), fail (the
    first `good` completions ok, then 500s), hang (then no answer). With `context` (a token count) and
    `tokenizer` it refuses, in vLLM's words, a request whose prompt plus max_tokens exceed that context."""

    def __init__(self, mode: str = "ok", good: int = 10**9, context: int = 0, tokenizer=None):
        self.mode, self.good, self.calls = mode, good, 0
        self.context, self.tokenizer, self.refused = context, tokenizer, 0
        self.released = threading.Event()
        self.lock = threading.Lock()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.reply(200, {"data": [{"id": "scripted"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if not isinstance(body["prompt"], str):
                    return self.reply(400, {"error": "text prompts only"})
                if scripted.context:
                    n = len(scripted.tokenizer.encode(body["prompt"], add_special_tokens=False))
                    if n + body["max_tokens"] > scripted.context:
                        with scripted.lock:
                            scripted.refused += 1
                        return self.reply(400, {"error": {"type": "BadRequestError", "code": 400, "message": (
                            f"This model's maximum context length is {scripted.context} tokens. However, you "
                            f"requested {body['max_tokens']} output tokens and your prompt contains {n} input "
                            f"tokens, for a total of {n + body['max_tokens']} tokens.")}})
                with scripted.lock:
                    scripted.calls += 1
                    bad = scripted.calls > scripted.good
                if bad and scripted.mode == "fail":
                    return self.reply(500, {"error": "boom"})
                if bad and scripted.mode == "hang":
                    scripted.released.wait(30)
                    return
                self.reply(200, scripted.complete(body["prompt"]))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def complete(prompt: str) -> dict:
        printed = re.findall(r"stdout: (-?\d+)", prompt)
        if printed:
            choice = {"text": f"The tool says {printed[-1]}. \\boxed{{{printed[-1]}}}", "finish_reason": "stop",
                      "stop_reason": None}
        else:
            expr = re.findall(r"Compute: ([0-9*+ -]+)", prompt)[-1].strip()
            call = json.dumps({"name": "python_code_with_standard_io",
                               "arguments": {"code": f"print({expr})", "input": ""}})
            # the stop string trimmed, as a server without include_stop_str_in_output does
            choice = {"text": f"Let me compute.\n<tool_call>\n{call}\n", "finish_reason": "stop",
                      "stop_reason": "</tool_call>"}
        return {"choices": [{"index": 0, **choice}], "usage": {"completion_tokens": 10}}

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def scripted():
    servers = []

    def start(mode: str = "ok", good: int = 10**9, **context) -> Scripted:
        servers.append(Scripted(mode, good, **context))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture()
def problems(tmp_path) -> Path:
    path = tmp_path / "compute.jsonl"
    pairs = [("123*45", 5535), ("17+25", 42), ("999*999", 998001), ("2*3*7", 42)]
    path.write_text("".join(json.dumps({"question": f"Compute: {e}", "answer": str(a)}) + "\n" for e, a in pairs))
    return path


def served_argv(url: str, problems: Path, out: Path, tiny: str, judge_url: str, *extra: str) -> list[str]:
    return ["--data", str(problems), "--base-url", url, "--tokenizer", tiny, "--max-tokens", "400",
            "--judge-url", judge_url, "--output", str(out), *COMMON, *extra]


def test_served_model_calls_the_tool_on_the_judge(scripted, problems, tiny, tmp_path, judge_url):
    server = scripted("ok")
    out = tmp_path / "served"
    run_eval(*served_argv(server.url, problems, out, tiny, judge_url, "--n", "2"))
    rs = records(out)
    assert len(rs) == 8 and all(r["score"] == 1.0 for r in rs)
    r = next(r for r in rs if r["problem_index"] == 0)
    assert r["tool_calls"] == 1 and r["tool_errors"] == 0 and r["answer"] == "5535" and r["finish_reason"] == "stop"
    assert r["tool_call_log"][0]["arguments"]["code"] == "print(123*45)"
    assert "stdout: 5535" in r["tool_call_log"][0]["output"] and r["tool_call_log"][0]["success"]
    assert [t["role"] for t in r["turns"]] == ["assistant", "tool", "assistant"]
    assert r["turns"][0]["text"].rstrip().endswith("</tool_call><|im_end|>") or "</tool_call>" in r["turns"][0]["text"]
    assert "<tool_response>" in r["turns"][1]["text"]
    summary = json.loads((out / "summary.json").read_text())["all"]
    assert summary["avg@2"] == summary["pass@2"] == summary["maj@2"] == 1.0 and summary["tool_calls_per_traj"] == 1


def test_context_limits_are_read_from_vllm_and_sglang_refusals():
    import doctest

    from rstar2_agent.eval import clients

    result = doctest.testmod(clients)  # two of vLLM's wordings and a 400 that is about something else
    assert result.attempted >= 3 and result.failed == 0
    sglang = "HTTP 400: The input (3000 tokens) is longer than the model's context length (2048 tokens)."
    assert clients.context_limit_in(sglang) == 2048
    assert clients.context_limit_in("HTTP 500: maximum context length is 2048") is None  # not a refusal


def test_a_conversation_past_the_served_context_ends_alone(scripted, problems, tiny, tmp_path, judge_url):
    """A 400 naming the context length caps later turns to the room left; a problem too long for the context
    is recorded as finish_reason context_full with score 0, and the run goes on (it used to stop there)."""
    from transformers import AutoTokenizer

    rows = problems.read_text().splitlines()
    rows[2] = json.dumps({"question": "Compute: 999*999 " + "and then some more words " * 300, "answer": "998001"})
    problems.write_text("\n".join(rows) + "\n")
    server = scripted("ok", context=1200, tokenizer=AutoTokenizer.from_pretrained(tiny))
    out = tmp_path / "context"
    argv = served_argv(server.url, problems, out, tiny, judge_url, "--n", "1", "--concurrency", "1")
    argv[argv.index("--max-tokens") + 1] = "4000"  # every first request is over the context
    run_eval(*argv)
    rs = {r["problem_index"]: r for r in records(out)}
    assert len(rs) == 4 and server.refused >= 1
    assert rs[2]["finish_reason"] == "context_full" and rs[2]["score"] == 0.0 and rs[2]["response_length"] == 0
    assert all(rs[i]["finish_reason"] == "stop" and rs[i]["score"] == 1.0 for i in (0, 1, 3))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["all"]["avg@1"] == 0.75


@pytest.mark.parametrize("mode", ["refused", "fail", "hang"])
def test_bad_server_clear_error_and_finished_results_kept(mode, scripted, problems, tiny, tmp_path, judge_url):
    out = tmp_path / mode
    if mode == "refused":
        url, good = f"http://127.0.0.1:{free_port()}", 0
    else:
        good = 4  # two trajectories (a tool turn and an answer turn each), one at a time
        url = scripted(mode, good).url
    argv = served_argv(url, problems, out, tiny, judge_url, "--n", "1", "--concurrency", "1",
                       *(["--model", "scripted"] if mode == "refused" else []),
                       *(["--request-timeout", "2"] if mode == "hang" else []))  # the hang is the 3rd request
    with pytest.raises(SystemExit) as exc:
        run_eval(*argv)
    message = str(exc.value.code)
    expect = {"refused": "ConnectError", "fail": "HTTP 500", "hang": "ReadTimeout"}[mode]
    assert expect in message and "rerun the same command to resume" in message, message
    kept = records(out) if (out / "trajectories.jsonl").exists() else []
    assert len(kept) == good // 2 and all(r["score"] == 1.0 for r in kept)
    assert f"{good // 2} of 4 trajectories are finished" in message
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["all"]["trajectories"] == good // 2
    if mode == "fail":  # the server is back: the rerun does the rest only
        fixed = scripted("ok")
        run_eval(*served_argv(fixed.url, problems, out, tiny, judge_url, "--n", "1", "--concurrency", "1"))
        assert fixed.calls == 2 * (4 - good // 2) and len(records(out)) == 4


# ------------------------------------------------------------------------- real completions servers


@pytest.fixture(scope="module")
def tiny_server(tiny, tmp_path_factory):
    """The tiny model behind our completions server, in a subprocess."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = start_server([sys.executable, "-m", "rstar2_agent.eval.server", "--model-dir", tiny, "--port", str(port),
                         "--threads", "2"], log, url, 180)
    yield url
    stop_server(proc)


def test_token_ids_in_and_out_against_a_served_tiny_model(tiny_server, tiny, tmp_path, judge_url):
    from transformers import AutoTokenizer

    from rstar2_agent.eval.clients import CompletionsClient

    tokenizer = AutoTokenizer.from_pretrained(tiny)

    async def one():
        async with CompletionsClient(tiny_server, tokenizer) as client:
            ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n", add_special_tokens=False)
            gen = await client("r", ids, {"temperature": 0.0, "max_tokens": 8})
            return client, gen

    client, gen = asyncio.run(one())
    assert client.api.model == tiny and client.token_prompts is True and client.token_ids_returned == 1
    assert 0 < len(gen.token_ids) <= 9  # 8, or fewer and EOS

    out = tmp_path / "tiny-served"
    run_eval("--data", "bundled", "--limit", "2", "--n", "2", "--base-url", tiny_server, "--model", tiny,
             "--max-tokens", "16", "--judge-url", judge_url, "--output", str(out), *COMMON)
    rs = records(out)
    assert len(rs) == 4 and all(0 < r["response_length"] <= 16 for r in rs)
    assert json.loads((out / "summary.json").read_text())["all"]["problems"] == 2


def test_eval_against_vllm_serve(vllm_server, tmp_path, judge_url):
    url, model = vllm_server
    out = tmp_path / "vllm"
    run_eval("--data", "bundled", "--limit", "2", "--n", "2", "--base-url", url, "--model", model,
             "--max-tokens", "64", "--system-prompt", "cpu", "--judge-url", judge_url, "--output", str(out),
             *COMMON)
    rs = records(out)
    assert len(rs) == 4 and all(r["finish_reason"] for r in rs)


def test_vllm_serve_context_limit_is_learnt_and_a_too_long_prompt_is_context_full(vllm_server):
    """vLLM's own refusal (prompt + max_tokens over --max-model-len 2048) is understood: the turn is asked again
    within the context, and a prompt that fills it raises ContextFull instead of failing the run."""
    from transformers import AutoTokenizer

    from rstar2_agent.eval.clients import CompletionsClient
    from rstar2_agent.rollout import ContextFull

    url, model = vllm_server
    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = tokenizer.encode("<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)

    async def run():
        async with CompletionsClient(url, tokenizer, model=model) as client:
            gen = await client("a", ids, {"temperature": 0.0, "max_tokens": 4000})
            with pytest.raises(ContextFull):
                await client("b", ids * 400, {"temperature": 0.0, "max_tokens": 16})
            return client, gen

    client, gen = asyncio.run(run())
    assert client.context_limit == 2048 and client.token_prompts is True
    assert 0 < len(gen.token_ids) <= 2048 - len(ids)


def test_chat_example_prints_each_tool_call_and_output(scripted, tiny, judge_url):
    server = scripted("ok")
    example = Path(__file__).resolve().parents[1] / "examples" / "chat_with_tool_call.py"
    proc = subprocess.run([sys.executable, str(example), "--base-url", server.url, "--tokenizer", tiny,
                           "--judge-url", judge_url], input="Compute: 6*7\n/reset\nCompute: 5+6\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "tool call> python_code_with_standard_io: print(6*7)" in out and "stdout: 42" in out
    assert "\\boxed{42}" in out and "print(5+6)" in out and "\\boxed{11}" in out  # /reset: a fresh conversation
    assert out.index("tool call> python_code_with_standard_io: print(6*7)") < out.index("stdout: 42") < \
        out.index("\\boxed{42}")
