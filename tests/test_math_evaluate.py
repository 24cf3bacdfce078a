"""Evaluation tasks: upstream names from an eval_data folder, the bundled split, and `math eval` end to end."""

from __future__ import annotations

import json

import pytest

from rstar2_agent.cli import build_parser
from rstar2_agent.math.evaluate import UPSTREAM_TASKS, load_task
from rstar2_agent.math.records import read_records
from rstar2_agent.verl_cpu.models import save_tiny


def test_bundled_and_upstream_layout(tmp_path):
    bundled = load_task("bundled")
    assert len(bundled) == 80 and set(bundled[0]) >= {"question", "answer"}
    (tmp_path / "aime2024").mkdir()
    (tmp_path / "aime2024" / "test.json").write_text(json.dumps([{"question": "x?", "answer": "1"}]))
    (tmp_path / "math500.jsonl").write_text('{"question": "y?", "answer": "2"}\n')
    assert load_task("aime2024", tmp_path) == [{"question": "x?", "answer": "1"}]
    assert load_task("math500", tmp_path)[0]["answer"] == "2"
    assert "omni-math" in UPSTREAM_TASKS
    with pytest.raises(FileNotFoundError, match="gsm8k.jsonl"):
        load_task("gsm8k", tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        load_task("mmlu", tmp_path)


def test_eval_command_with_the_tiny_model(tmp_path, judge_url, capsys):
    model_dir = save_tiny(str(tmp_path / "tiny"), seed=4)
    data = tmp_path / "eval_data"
    data.mkdir()
    (data / "math500.jsonl").write_text("".join(json.dumps({"question": f"What is {i}+{i}?", "answer": str(2 * i)})
                                                + "\n" for i in range(3)))
    out = tmp_path / "eval.jsonl"
    args = build_parser().parse_args(
        ["math", "eval", "--model", str(model_dir), "--task", "math500", "--data-dir", str(data), "--limit", "2",
         "--output", str(out), "--judge-url", judge_url, "max_tokens=8"])
    args.func(args)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["task"] == "math500" and report["questions"] == 2 and report["output"] == str(out)
    assert 0.0 <= report["pass@1"] <= 1.0
    assert len(read_records(out)) == 2
