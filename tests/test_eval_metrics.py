"""The eval's metrics, by hand, on scripted trajectory records: avg@n, pass@n, maj@n (ties included), the
trajectory numbers and the per-source split (rstar2_agent.eval.metrics)."""

from __future__ import annotations

import pytest

from rstar2_agent.eval.metrics import avg_at_n, maj_at_n, pass_at_n, problem_metrics, summarize
from rstar2_agent.eval.output import format_table


def rec(problem: int, sample: int, answer, score: float, source: str = "a", **kw) -> dict:
    return {"problem_index": problem, "sample": sample, "answer": answer, "score": score, "data_source": source,
            **kw}


def test_avg_and_pass():
    assert avg_at_n([1.0, 0.0, 0.0, 0.0]) == 0.25
    assert avg_at_n([]) == 0.0
    assert pass_at_n([0.0, 0.0, 1.0]) == 1.0 and pass_at_n([0.0, 0.0]) == 0.0 and pass_at_n([]) == 0.0


def test_majority_vote_and_its_tie_rule():
    # a clear majority, right or wrong
    assert maj_at_n(["5", "5", "7", "7", "5"], [1, 1, 0, 0, 1]) == 1.0
    assert maj_at_n(["5", "7", "7"], [1, 0, 0]) == 0.0
    # samples without an answer do not vote, however many
    assert maj_at_n([None, None, None, "5"], [0, 0, 0, 1]) == 1.0
    assert maj_at_n([None, ""], [0, 0]) == 0.0
    # ties share the credit: the expected score of a uniform random tie-break, whatever the sample order
    assert maj_at_n(["5", "7"], [1, 0]) == 0.5 == maj_at_n(["7", "5"], [0, 1])
    assert maj_at_n(["5", "7", "9", "5", "7", "9"], [1, 0, 0, 1, 0, 0]) == pytest.approx(1 / 3)
    assert maj_at_n(["5", "7", "7", "5", "9"], [1, 0, 0, 1, 0]) == 0.5  # 9 is not tied for the top
    # answers vote together after the reward's normalisation
    assert maj_at_n([r"\frac{1}{2}", r"\dfrac{1}{2}", "3"], [1, 1, 0]) == 1.0
    with pytest.raises(ValueError):
        maj_at_n(["1"], [1, 0])


def test_summary_by_hand():
    n = 4
    records = [
        # problem 0 (source a): 3 of 4 right, majority right
        rec(0, 0, "10", 1.0, tool_calls=1, tool_errors=0, response_length=100, finish_reason="stop"),
        rec(0, 1, "10", 1.0, tool_calls=2, tool_errors=1, response_length=200, finish_reason="stop"),
        rec(0, 2, "11", 0.0, tool_calls=0, response_length=300, finish_reason="length"),
        rec(0, 3, "10", 1.0, tool_calls=1, response_length=100, finish_reason="stop"),
        # problem 1 (source b): 1 of 4 right, a 2-2 tie between a right and a wrong answer
        rec(1, 0, "4", 1.0, "b", tool_calls=1, parse_errors=1, response_length=50, finish_reason="stop"),
        rec(1, 1, "3", 0.0, "b", response_length=50, finish_reason="stop"),
        rec(1, 2, "3", 0.0, "b", response_length=50, finish_reason="max_turns"),
        rec(1, 3, "4", 0.0, "b", response_length=50, finish_reason="stop"),  # scored 0: a group takes its first
        # the sandbox failed this one: counted, not scored
        rec(1, 3, None, 0.0, "b", infra_error=True, tool_calls=5, response_length=999, finish_reason="infra_error"),
    ]
    report = summarize(records, n)
    a, b, total = report["by_source"]["a"], report["by_source"]["b"], report["all"]
    assert (a["avg@4"], a["pass@4"], a["maj@4"]) == (0.75, 1.0, 1.0)
    assert (b["avg@4"], b["pass@4"], b["maj@4"]) == (0.25, 1.0, 0.5)  # "4" (right by its 1st score) ties "3"
    assert total["problems"] == 2 and total["trajectories"] == 8 and report["infra_errors"] == 1
    assert total["avg@4"] == pytest.approx((0.75 + 0.25) / 2) and total["pass@4"] == 1.0
    assert total["maj@4"] == pytest.approx((1.0 + 0.5) / 2)
    assert total["tool_calls_per_traj"] == 5 / 8
    assert total["tool_error_ratio"] == (1 + 1) / (5 + 1)  # (errors + malformed) / (calls + malformed)
    assert a["response_length"] == 175 and total["response_length"] == (700 + 200) / 8
    assert total["finish_reasons"] == {"length": 1, "max_turns": 1, "stop": 6}
    assert problem_metrics(records[4:6]) == {"avg": 0.5, "pass": 1.0, "maj": 0.5}
    table = format_table(report, n).splitlines()
    assert table[0].split()[:6] == ["source", "problems", "trajs", "avg@4", "pass@4", "maj@4"]
    assert [line.split()[0] for line in table[2:5]] == ["a", "b", "all"] and "not scored" in table[-1]


def test_a_two_two_tie_between_right_and_wrong_is_half_credit():
    records = [rec(0, 0, "4", 0.0), rec(0, 1, "3", 1.0), rec(0, 2, "4", 0.0), rec(0, 3, "3", 1.0)]
    assert summarize(records, 4)["all"]["maj@4"] == 0.5
