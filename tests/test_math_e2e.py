"""End to end: MCTS on 2 bundled problems through the real code judge, writing upstream JSONL; and the CLI
with the tiny model built in the test."""

from __future__ import annotations

import json
import re

from rstar2_agent.cli import build_parser
from rstar2_agent.data.math_tasks import load, reference_program
from rstar2_agent.math.config import load_config
from rstar2_agent.math.executor import CodeJudgeExecutor
from rstar2_agent.math.records import read_records, rebuild_tree
from rstar2_agent.math.run import search_file
from rstar2_agent.math.search import is_correct
from rstar2_agent.math.steps import Continuation, TOO_MANY_ERRORS
from rstar2_agent.verl_cpu.models import save_tiny


class OraclePolicy:
    """Writes the bundled task's reference program as one code block (and a broken one beside it); after the
    judge's output, boxes the last number it printed. The answer therefore comes from real execution."""

    def __init__(self, programs: dict[str, str]):
        self.programs = programs
        self.calls = 0

    def generate(self, prompts, n, params):
        self.calls += 1
        out = []
        for prompt in prompts:
            outputs = re.findall(r"<output>(.*?)<end_of_output>", prompt, re.S)
            if outputs:
                out.append([Continuation(f"<answer>So the answer is \\boxed{{{outputs[-1].strip()}}}",
                                         "<end_of_answer>")])
                continue
            program = next(code for problem, code in self.programs.items() if problem in prompt)
            out.append([Continuation(f"<code>\n{program}\n", "<end_of_code>"),
                        Continuation("<code>\nprint(undefined_value)\n", "<end_of_code>")])
        return out


def test_mcts_end_to_end_through_the_judge(tmp_path, judge_url):
    rows = load("test")[:2]
    qaf = tmp_path / "q.jsonl"
    qaf.write_text("".join(json.dumps({"question": r["problem"], "answer": r["answer"]}) + "\n" for r in rows))
    out = tmp_path / "trees.jsonl"
    cfg = load_config("cpu", ["n_generate_sample=2", "iterations=2"])
    policy = OraclePolicy({r["problem"]: reference_program(r) for r in rows})
    executor = CodeJudgeExecutor(judge_url)
    stats = search_file(qaf, cfg, policy, executor, out, log=lambda line: None)
    assert policy.calls == stats.rounds == 2  # root, then the code node; the 2nd rollout finds all terminal
    assert executor.calls == executor.requests == 1  # 4 codes of 2 questions in one judge request
    records = read_records(out)
    assert [r["question"] for r in records] == [r["problem"] for r in rows]
    for rec, row in zip(records, rows):
        tree = rec["rstar"]
        assert tree["0.2"]["final_answer"] == TOO_MANY_ERRORS and "NameError" in tree["0.2"]["observation"]
        assert "<output>" in tree["0.1"]["text"] and tree["0.1"]["observation"] == row["answer"]
        answer = tree["0.1.1"]
        assert is_correct(answer["final_answer"], row["answer"])
        assert (answer["q_value"], answer["visit_count"], tree["0.1"]["q_value"]) == (1.0, 1, 1.0)
        assert tree["0.2"]["q_value"] == -1.0 and tree["0"]["visit_count"] == 1
        root = rebuild_tree(rec)
        assert [n.tag for n in root.walk()] == ["0", "0.1", "0.1.1", "0.2"]
    metric = json.loads(out.with_suffix(".intermediate_metric.json").read_text())
    assert metric == [{"rollout": 1, "pass@1": 1.0, "pass@n": 1.0}, {"rollout": 2, "pass@1": 1.0, "pass@n": 1.0}]
    # resume: nothing left to do, nothing generated
    again = search_file(qaf, cfg, policy, executor, out, log=lambda line: None)
    assert again.rounds == 0 and len(read_records(out)) == 2


def test_cli_search_with_the_tiny_model(tmp_path, judge_url, capsys):
    model_dir = save_tiny(str(tmp_path / "tiny"), seed=2)
    qaf = tmp_path / "q.json"
    qaf.write_text(json.dumps([{"question": "What is 2+2?", "answer": "4"}, {"question": "What is 3*3?", "answer": "9"},
                               {"question": "skipped by --limit", "answer": "0"}]))
    out = tmp_path / "out.jsonl"
    args = build_parser().parse_args(
        ["math", "search", "--qaf", str(qaf), "--custom_cfg", "cpu", "--model_dir", str(model_dir),
         "--output", str(out), "--limit", "2", "--judge-url", judge_url,
         "max_tokens=8", "iterations=1", "n_generate_sample=2", "max_depth=2"])
    args.func(args)
    records = read_records(out)
    assert [r["question"] for r in records] == ["What is 2+2?", "What is 3*3?"]
    for rec in records:
        assert rec["answer"] and "0" in rec["rstar"] and len(rec["rstar"]) >= 2  # the root was expanded
        assert all(set(node) >= {"text", "q_value", "visit_count"} for node in rec["rstar"].values())
    assert f"wrote {out}" in capsys.readouterr().out
