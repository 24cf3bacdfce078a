"""Lock-step search with a scripted generator, an in-test executor and a scripted PPM: one call to each
interface per round for a batch of questions, MCTS Q values by hand, beam ordering, greedy."""

from __future__ import annotations

import contextlib
import io
import math
import re

import pytest

from rstar2_agent.math.config import SearchConfig, load_config
from rstar2_agent.math.search import best_answer, dedupe, is_correct, make_trees, run_search, search_batch
from rstar2_agent.math.steps import DEPTH_LIMIT, Continuation

QUESTIONS = [{"question": "What is 2+2?", "answer": "4"}, {"question": "What is 3+3?", "answer": "6"},
             {"question": "What is 1+1?", "answer": "2"}]


def operand(prompt: str) -> int:
    return int(re.search(r"What is (\d)\+", prompt).group(1))


class ScriptedGenerator:
    """MCTS script per question k: root -> [code 'x = k + k' <end_of_step>, wrong answer k*2+1 (EOS)];
    after the code step -> 'print(x)' <end_of_code>; after the output -> the right answer <end_of_answer>."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []  # (prompts, n)

    def generate(self, prompts, n, params):
        self.calls.append((len(prompts), n))
        return [self.script(p) for p in prompts]

    def script(self, prompt):
        k = operand(prompt)
        if "<end_of_output>" in prompt:
            return [Continuation(f"<answer>The answer is \\boxed{{{2 * k}}}", "<end_of_answer>", 7)]
        if "<code>" in prompt:
            return [Continuation("print(x)\n", "<end_of_code>", 3), Continuation("print(x)\n", "<end_of_code>", 3)]
        return [Continuation(f"<code>\nx = {k} + {k}\n", "<end_of_step>", 5),
                Continuation(f"The answer is \\boxed{{{2 * k + 1}}}", None, 6)]


class InTestExecutor:
    """Runs the scripted (trusted, test-written) code in-process; records each batch."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def run(self, codes):
        self.calls.append(list(codes))
        out = []
        for code in codes:
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    exec(code, {})  # noqa: S102 - the test's own scripted code
                out.append(buf.getvalue())
            except Exception as exc:  # noqa: BLE001
                out.append(f"{type(exc).__name__}: {exc}")
        return out


class ScriptedPPM:
    """Values by the first rule whose pattern is in the end of the scored text (its last step)."""

    def __init__(self, rules):
        self.rules = rules
        self.calls: list[int] = []

    def score(self, texts):
        self.calls.append(len(texts))
        return [next(v for pattern, v in self.rules if pattern in t[-60:]) for t in texts]


def node(tree, tag):
    return next(n for n in tree.root.walk() if n.tag == tag)


def test_dedupe():
    a, b = Continuation("x", "<end_of_step>"), Continuation("x", "<end_of_code>")
    assert dedupe([a, a, b]) == [a, b]
    ans1, ans2 = Continuation(r"\boxed{1}", "<end_of_answer>"), Continuation(r"\boxed{2}", "<end_of_answer>")
    assert dedupe([a, ans1, ans2, b]) == [ans1]


def test_correctness_uses_the_reward_equivalence():
    assert is_correct(r"\frac{1}{2}", "0.5") and is_correct("4", ["3", "4"]) and not is_correct("5", "4")


def test_terminal_guided_mcts_finds_the_right_branch_in_lock_step():
    cfg = SearchConfig(n_generate_sample=2, iterations=2, max_depth=4, is_sampling=True, errors_threshold=1)
    gen, ex = ScriptedGenerator(), InTestExecutor()
    finished = []
    trees = search_batch(make_trees(QUESTIONS, cfg), cfg, gen, ex, on_done=finished.append)
    # rounds: expand root, expand the code step, expand the closed code block; the 2nd rollout finds nothing open
    assert gen.calls == [(3, 2)] * 3
    assert [len(c) for c in ex.calls] == [3, 3]  # one batch per round with code, all 3 questions in it
    assert len(finished) == 3 and all(t.done for t in trees)
    for tree, k in zip(trees, (2, 3, 1)):
        root, code, wrong = tree.root, node(tree, "0.1"), node(tree, "0.2")
        closed, answer = node(tree, "0.1.1"), node(tree, "0.1.1.1")
        assert len(code.children) == 1  # the duplicate continuation was dropped
        assert closed.state["text"] == f"print(x)\n<end_of_code>\n<output>{2 * k}\n<end_of_output>"
        assert answer.state["final_answer"] == str(2 * k)
        # hand computation: wrong answer -1 back to the root, then the right one +1 along its path
        assert (wrong.q_value, wrong.visit_count) == (-1.0, 1)
        assert (answer.q_value, closed.q_value, code.q_value) == (1.0, 1.0, 1.0)
        assert (root.visit_count, root.q_value) == (2, 0.0)
        assert best_answer(tree) is answer
        assert code.is_terminal  # exhausted: all its descendants are terminal


def test_ppm_mcts_q_values_and_one_score_call_per_round():
    cfg = load_config("sft_eval_mcts", ["n_generate_sample=2", "iterations=1", "max_depth=4"])
    ppm = ScriptedPPM([("boxed{5}", -0.8), ("boxed{7}", -0.8), ("boxed{3}", -0.8), ("boxed", 0.9),
                       ("<end_of_output>", 0.6), ("+", 0.5)])
    gen, ex = ScriptedGenerator(), InTestExecutor()
    trees = search_batch(make_trees(QUESTIONS, cfg), cfg, gen, ex, value_model=ppm)
    assert len(gen.calls) == 3 and ppm.calls == [6, 3, 3]
    for tree in trees:
        root, code, wrong = tree.root, node(tree, "0.1"), node(tree, "0.2")
        closed, answer = node(tree, "0.1.1"), node(tree, "0.1.1.1")
        # code: initial 0.5, then +0.9 from the answer -> Q 0.7; closed: 0.6 then 0.9 -> 0.75
        assert code.value == 0.5 and math.isclose(code.q_value, 0.7)
        assert math.isclose(closed.q_value, 0.75) and math.isclose(answer.q_value, 0.9)
        # root: -0.8 from the wrong answer, +0.9 from the right one
        assert root.visit_count == 2 and math.isclose(root.q_value, 0.05)
        assert math.isclose(wrong.q_value, -0.8)
        assert best_answer(tree) is answer


def test_need_value_func_without_a_model_fails_early():
    cfg = SearchConfig(need_value_func=True)
    with pytest.raises(ValueError, match="no value model"):
        search_batch(make_trees(QUESTIONS[:1], cfg), cfg, ScriptedGenerator(), InTestExecutor())


class BeamGenerator:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, n, params):
        self.calls.append(len(prompts))
        out = []
        for p in prompts:
            if "x = 2" in p:
                out.append([Continuation(r"\boxed{2}", "<end_of_answer>")])
            elif "x = 3" in p:
                out.append([Continuation(r"\boxed{3}", "<end_of_answer>")])
            else:
                out.append([Continuation(f"<code>\n{body}\n", "<end_of_step>")
                            for body in ("x = 1", "x = 2", "x = 3", "1/0")])
        return out


def test_beam_search_keeps_the_best_by_value_and_drops_code_errors():
    cfg = SearchConfig(mode="bs", n_generate_sample=4, step_beam_width=2, max_depth=4, need_value_func=True)
    ppm = ScriptedPPM([("boxed{2}", 0.8), ("boxed{3}", 0.95), ("x = 1", 0.1), ("x = 2", 0.7), ("x = 3", 0.4),
                       ("1/0", 0.2)])
    gen, ex = BeamGenerator(), InTestExecutor()
    [tree] = search_batch(make_trees(QUESTIONS[:1], cfg), cfg, gen, ex, value_model=ppm)
    assert gen.calls == [1, 2]  # the root, then the two beam nodes in one call
    error = node(tree, "0.4")
    assert error.is_terminal and "ZeroDivisionError" in error.observation and not error.children
    kept = [n.parent.state["action_input"] for n in tree.final_nodes]
    assert kept == ["<code>\nx = 3\n<end_of_step>", "<code>\nx = 2\n<end_of_step>"]  # x = 1 fell off the beam
    assert not node(tree, "0.1").children
    assert [n.state["final_answer"] for n in tree.final_nodes] == ["3", "2"]  # sorted by value
    assert best_answer(tree).state["final_answer"] == "3"


class GuessOrStep:
    """At the root a code step and a bare guess; after the step, the right answer."""

    def generate(self, prompts, n, params):
        if "x = 2" in prompts[0]:
            return [[Continuation(r"\boxed{4}", "<end_of_answer>")]]
        # the guess ends without <end_of_answer> (an answer so stopped would be the expansion's only child)
        return [[Continuation("<code>\nx = 2\n", "<end_of_step>"), Continuation(r"So it is \boxed{7}.", None)]]


@pytest.mark.parametrize("guess_value, answer", [(0.1, "4"), (0.9, "7")])
def test_beam_takes_an_answer_only_when_it_ranks_within_the_beam(guess_value, answer):
    """Upstream's order: rank all children, keep the top step_beam_width, then take the valid answers among them.
    A guess valued below the code step is not kept (the search goes on to the right answer); one valued above it
    fills the width-1 beam and ends the search."""
    cfg = SearchConfig(mode="bs", n_generate_sample=2, step_beam_width=1, max_depth=4, need_value_func=True)
    ppm = ScriptedPPM([("boxed{4}", 0.8), ("boxed{7}", guess_value), ("x = 2", 0.5)])
    [tree] = search_batch(make_trees(QUESTIONS[:1], cfg), cfg, GuessOrStep(), InTestExecutor(), value_model=ppm)
    assert [n.state["final_answer"] for n in tree.final_nodes] == [answer]
    assert best_answer(tree).state["final_answer"] == answer


class GreedyGenerator:
    def __init__(self, finish: bool):
        self.finish = finish
        self.params = []

    def generate(self, prompts, n, params):
        self.params.append((n, params["temperature"], params["stop"]))
        if "<end_of_output>" in prompts[0]:
            text = r"<answer>\boxed{4}" if self.finish else "more thinking"
            return [[Continuation(text, "<end_of_answer>" if self.finish else None)]]
        return [[Continuation("<code>\nprint(2 + 2)\n", "<end_of_code>")]]


@pytest.mark.parametrize("finish", [True, False])
def test_greedy_is_one_code_block_then_the_answer(finish):
    cfg = load_config("sft_eval_greedy")
    gen = GreedyGenerator(finish)
    [tree] = run_search(QUESTIONS[:1], cfg, gen, InTestExecutor())
    assert gen.params == [(1, 0.0, ["<end_of_code>", "<end_of_answer>"])] * 2
    last = node(tree, "0.1.1")
    assert node(tree, "0.1").state["text"].endswith("<output>4\n<end_of_output>")
    if finish:
        assert best_answer(tree) is last and last.state["final_answer"] == "4"
    else:
        assert last.is_terminal and last.state["final_answer"] == DEPTH_LIMIT and best_answer(tree) is None


class ProseGenerator:
    def generate(self, prompts, n, params):
        return [[Continuation("First note that the sum is even.\n", "<end_of_step>"),
                 Continuation("<code>\nprint(1)\n", "<end_of_code>")] for _ in prompts]


def test_prose_steps_are_not_sent_to_the_judge():
    cfg = SearchConfig(n_generate_sample=2, iterations=1, max_depth=1, errors_threshold=1)
    ex = InTestExecutor()
    [tree] = search_batch(make_trees(QUESTIONS[:1], cfg), cfg, ProseGenerator(), ex)
    assert ex.calls == [["print(1)"]]
    prose, code = tree.root.children
    assert prose.observation == "" and prose.consecutive_errors == 0
    assert code.state["text"].endswith("<output>1\n<end_of_output>")


def test_batch_size_splits_questions():
    cfg = SearchConfig(n_generate_sample=2, iterations=1, max_depth=4, is_sampling=True, batch_size=2)
    gen = ScriptedGenerator()
    trees = run_search(QUESTIONS, cfg, gen, InTestExecutor())
    assert len(trees) == 3 and [c[0] for c in gen.calls] == [2, 2, 2, 1, 1, 1]


class TwoAnswers:
    def __init__(self):
        self.calls = 0

    def generate(self, prompts, n, params):
        self.calls += 1
        return [[Continuation(r"\boxed{4}", None), Continuation(r"\boxed{5}", None)] for _ in prompts]


def test_docstring_example_exhausted_root_ends_the_search():
    cfg = SearchConfig(n_generate_sample=2, iterations=5, is_sampling=True)
    gen = TwoAnswers()
    [tree] = search_batch(make_trees(QUESTIONS[:1], cfg), cfg, gen, InTestExecutor())
    right, wrong = tree.root.children
    assert (right.q_value, wrong.q_value, tree.root.visit_count, tree.root.q_value) == (1.0, -1.0, 2, 0.0)
    assert tree.root.is_terminal and gen.calls == 1 and tree.rollouts == 1  # ended early, not after 5
