"""Scores of search outputs: best terminal by Q, pass@1, and the multi-run pass@n / majority / weighted votes."""

from __future__ import annotations

import json
import random

import pytest

from rstar2_agent.cli import build_parser
from rstar2_agent.math.metrics import best_terminal, group_answers, multi_run_report, pass_at_1, vote
from rstar2_agent.math.steps import TOO_MANY_ERRORS


def record(question, answer, terminals):
    """A record whose root has one child per (final_answer, q) terminal."""
    nodes = {"0": {"final_answer": "", "q_value": 0.0}}
    for i, (final, q) in enumerate(terminals, 1):
        nodes[f"0.{i}"] = {"final_answer": final, "q_value": q}
    return {"question": question, "answer": answer, "rstar": nodes}


def test_best_terminal_ignores_failures_and_takes_the_first_on_ties():
    rec = record("q", "4", [(TOO_MANY_ERRORS, 5.0), ("3", 0.5), ("4", 0.5), ("2", -1.0)])
    assert best_terminal(rec) == ("3", 0.5)
    assert best_terminal(record("q", "4", [(TOO_MANY_ERRORS, 1.0)])) is None


def test_pass_at_1():
    recs = [record("a", "4", [("4", 0.9), ("5", 0.1)]), record("b", "1/2", [("0.5", 0.3)]),
            record("c", "7", [("6", 1.0), ("7", 0.2)]), record("d", "1", [])]
    assert pass_at_1(recs) == 0.5


def test_grouping_uses_the_equivalence_check():
    assert group_answers(["1/2", "0.5", "3", r"\frac{1}{2}"]) == [[0, 1, 3], [2]]
    assert vote(["3", "0.5", "1/2"], [1.0, 1.0, 1.0], random.Random(0)) == "0.5"
    assert vote(["3", "0.5", "1/2"], [5.0, 1.0, 1.0], random.Random(0)) == "3"


def test_multi_run_worked_example():
    runs = [[record("q", "4", [("4", 0.9)])], [record("q", "4", [("5", 0.95)])], [record("q", "4", [("4", 0.2)])]]
    two = multi_run_report(runs, top_n=2)
    assert (two["pass@1"], two["pass@n"], two["weighted_majority"]) == (0.0, 1.0, 0.0)
    three = multi_run_report(runs, top_n=3)
    assert (three["pass@1"], three["pass@n"], three["majority"], three["weighted_majority"]) == (0.0, 1.0, 1.0, 1.0)
    assert three["questions"] == 1 and three["runs"] == 3


def test_score_cli(tmp_path, capsys):
    paths = []
    for i, best in enumerate(["4", "5", "4"]):
        p = tmp_path / f"run{i}.jsonl"
        p.write_text(json.dumps(record("q", "4", [(best, 0.9 - i * 0.1)])) + "\n")
        paths.append(str(p))
    args = build_parser().parse_args(["math", "score", *paths, "--top_n", "3"])
    args.func(args)
    report = json.loads(capsys.readouterr().out)
    assert report["pass@1"] == 1.0 and report["majority"] == 1.0 and len(report["per_file_pass@1"]) == 3
    assert report["per_file_pass@1"] == pytest.approx([1.0, 0.0, 1.0])


def test_rollout_metrics_per_rollout():
    from rstar2_agent.math.metrics import rollout_metrics

    per_question = [
        ("4", [[("5", -1.0)], [("5", -1.0), ("4", 1.0)]]),  # right answer found in rollout 2
        ("2", [[("2", 1.0)]]),  # exhausted after rollout 1: keeps its answers
        ("9", [[], [("8", 0.3), ("9", 0.1)]]),  # right answer present but not the best
    ]
    assert rollout_metrics(per_question) == [
        {"rollout": 1, "pass@1": 1 / 3, "pass@n": 1 / 3},
        {"rollout": 2, "pass@1": 2 / 3, "pass@n": 1.0},
    ]
