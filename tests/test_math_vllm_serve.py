"""The math search's OpenAI-compatible backend against a real `vllm serve` of the default CPU model (the
session's `vllm_server` fixture in conftest.py; it skips where vLLM is not installed): continuations per
prompt, stop strings named as vLLM reports them, and a search end to end through the CLI."""

from __future__ import annotations

from rstar2_agent.math.openai_backend import OpenAICompletionsGenerator
from rstar2_agent.math.records import read_records

PROMPT = "<|user|>:\nWhat is 17 * 23?\n<|assistant|>: Let's think step by step and solve the problem with code."


def test_n_continuations_with_their_stop_strings(vllm_server):
    url, model = vllm_server
    gen = OpenAICompletionsGenerator(url, model=model, max_concurrency=4)
    rows = gen.generate([PROMPT, PROMPT + "\n<code>\n"], 3, {"temperature": 1.0, "top_p": 1.0, "top_k": -1,
                                                             "max_tokens": 24, "stop": ["\n"], "seed": 7})
    assert [len(row) for row in rows] == [3, 3]
    for row in rows:
        for cont in row:
            assert cont.stop_reason in (None, "\n") and "\n" not in cont.text
    assert any(c.stop_reason == "\n" for row in rows for c in row)


def test_search_through_the_cli_against_vllm_serve(vllm_server, tmp_path, judge_url):
    from rstar2_agent.cli import main

    url, model = vllm_server
    qaf = tmp_path / "q.jsonl"
    qaf.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "What is 6 * 7?", "answer": "42"}\n')
    out = tmp_path / "out.jsonl"
    main(["math", "search", "--qaf", str(qaf), "--custom_cfg", "cpu", "--model_dir", model, "--backend", "openai",
          "--base-url", url, "--judge-url", judge_url, "--output", str(out), "iterations=2", "max_depth=3",
          "max_tokens=48", "n_generate_sample=2"])
    records = read_records(out)
    assert [r["question"] for r in records] == ["What is 2 + 3?", "What is 6 * 7?"]
    assert all(len(r["rstar"]) > 1 for r in records)  # each root got children from the server
