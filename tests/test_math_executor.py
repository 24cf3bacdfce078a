"""Code steps through a real code judge (the session's LocalJudge from conftest): one request per batch,
observations as upstream's interpreter gives them."""

from __future__ import annotations

from code_judge.models import Reason, SubmissionResult
from rstar2_agent.math.executor import CodeJudgeExecutor, observation_of, print_last_expression
from rstar2_agent.math.search import make_trees, search_batch
from rstar2_agent.math.config import SearchConfig
from rstar2_agent.math.steps import Continuation


def test_print_last_expression():
    assert print_last_expression("a = 1\na + 1") == "a = 1\nprint(a + 1)"
    assert print_last_expression("for i in range(2):\n    i") == "for i in range(2):\n    i"
    assert print_last_expression("x = (1 +\n 2)\n(x,\n x)") == "x = (1 +\n 2)\nprint((x,\n x))"
    assert print_last_expression("def f(:") == "def f(:"


def test_observation_rules():
    ok = SubmissionResult(run_success=True, stdout="4\n")
    assert observation_of(ok) == "4"
    crash = SubmissionResult(stderr="Traceback (most recent call last):\n  File x\nValueError: bad\n")
    assert observation_of(crash) == "ValueError: bad"
    assert observation_of(SubmissionResult(reason=Reason.WORKER_TIMEOUT)).startswith("TimeoutError")
    assert "error" in observation_of(SubmissionResult(stderr="killed\n")).lower()
    assert "queue_timeout" in observation_of(SubmissionResult(reason=Reason.QUEUE_TIMEOUT))


def test_a_batch_is_one_request_with_upstream_observations(judge_url):
    ex = CodeJudgeExecutor(judge_url)
    obs = ex.run(["x = 6 * 7\nprint(x)", "1 / 0", "y = 3\ny ** 2"])
    assert ex.requests == 1 and ex.calls == 1
    assert obs[0] == "42"
    assert "ZeroDivisionError" in obs[1] and "Error" in obs[1]
    assert obs[2] == "9"  # the last expression is shown


def test_timeout_observation(judge_url):
    [obs] = CodeJudgeExecutor(judge_url).run(["while True:\n    pass"])
    assert obs.startswith("TimeoutError")


class OneShot:
    def generate(self, prompts, n, params):
        return [[Continuation("<code>\nimport math\nmath.factorial(5)\n", "<end_of_code>"),
                 Continuation("<code>\nundefined_name + 1\n", "<end_of_code>")] for _ in prompts]


def test_search_round_through_the_judge(judge_url):
    cfg = SearchConfig(n_generate_sample=2, iterations=1, max_depth=1, errors_threshold=1)
    ex = CodeJudgeExecutor(judge_url)
    trees = search_batch(make_trees([{"question": f"q{i}", "answer": "1"} for i in range(3)], cfg),
                         cfg, OneShot(), ex)
    assert ex.calls == 1 and ex.requests == 1  # six codes of three questions, one request
    for tree in trees:
        good, bad = tree.root.children
        assert good.state["text"].endswith("<output>120<end_of_output>")
        assert bad.is_terminal and bad.state["final_answer"] == "Too many consecutive steps have code errors."
        assert "NameError" in bad.observation
