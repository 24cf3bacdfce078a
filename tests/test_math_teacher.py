"""The scripted round-1 teacher: it reads every bundled question, solves each family when it makes no mistake,
continues a partial solution consistently, and an MCTS over it (through the real code judge) grows trees with
both correct and wrong answers; it is deterministic and independent of batching."""

from __future__ import annotations

import doctest

from rstar2_agent.data import math_tasks
from rstar2_agent.math import teacher
from rstar2_agent.math.config import load_config
from rstar2_agent.math.executor import CodeJudgeExecutor
from rstar2_agent.math.prompts import question_prompt
from rstar2_agent.math.search import is_correct, run_search
from rstar2_agent.math.steps import FAILURE_ANSWERS, TOO_MANY_ERRORS
from rstar2_agent.math.teacher import ScriptedTeacher
from test_math_search import InTestExecutor


def items(split: str, per_family: int = 1) -> list[dict]:
    rows, seen = [], {}
    for row in math_tasks.load(split):
        if seen.get(row["family"], 0) < per_family:
            seen[row["family"]] = seen.get(row["family"], 0) + 1
            rows.append({"question": row["problem"], "answer": row["answer"]})
    return rows


def test_doctests():
    result = doctest.testmod(teacher)
    assert result.attempted > 0 and result.failed == 0


def test_reads_and_solves_every_bundled_question():
    for split in math_tasks.SPLITS:
        for row in math_tasks.load(split):
            assert teacher.find_question(row["problem"])[0] == row["family"]
            assert str(teacher.solve(row["problem"])) == row["answer"]


def test_without_mistakes_every_family_is_solved_through_the_search():
    cfg = load_config("cpu", ["temperature=0", "n_generate_sample=1", "iterations=1", "save_intermediate_rollouts=false"])
    trees = run_search(items("train", 2), cfg, ScriptedTeacher(seed=0), InTestExecutor())
    for tree in trees:
        [leaf] = [n for n in tree.root.walk() if n.is_valid_leaf()]
        assert is_correct(leaf.state["final_answer"], tree.answer), tree.question
        assert leaf.q_value == 1.0


def test_continues_a_partial_solution_with_an_earlier_mistake():
    """The computation step and the print follow the (wrong) numbers already written; a misread number is
    never repaired."""
    t = ScriptedTeacher(seed=0)
    prompt = question_prompt("What is 12 times 34?") + "<code>\n# Step 1: Write down the numbers\na = 13\nb = 34\n<end_of_step>\n"
    [[step]] = t.generate([prompt], 1, {"temperature": 0})
    assert step.text == "# Step 2: Multiply them\nresult = a * b\n" and step.stop_reason == "<end_of_step>"
    prompt += step.text + step.stop_reason + "\n# Now print the final answer\nprint(result)\n<end_of_code>\n<output>442<end_of_output>\n"
    [[answer]] = t.generate([prompt], 1, {"temperature": 0})
    assert answer.text == "<answer>The answer is \\boxed{442}\n" and answer.stop_reason == "<end_of_answer>"


def test_mcts_trees_hold_correct_and_wrong_steps_through_the_code_judge(judge_url):
    cfg = load_config("cpu", ["save_intermediate_rollouts=false", "iterations=6"])
    executor = CodeJudgeExecutor(judge_url)
    trees = run_search(items("train", 1), cfg, ScriptedTeacher(seed=0), executor)
    correct = wrong = errors = 0
    mixed_trees = 0
    for tree in trees:
        leaves = [n for n in tree.root.walk() if n.is_terminal]
        good = [n for n in leaves if n.is_valid_leaf() and is_correct(n.state["final_answer"], tree.answer)]
        bad = [n for n in leaves if n.is_valid_leaf() and n not in good]
        assert all(n.q_value == 1.0 for n in good) and all(n.q_value == -1.0 for n in bad)
        correct += len(good)
        wrong += len(bad)
        errors += sum(n.state["final_answer"] == TOO_MANY_ERRORS for n in leaves)
        mixed_trees += bool(good and bad)
        assert not any(n.state["final_answer"] in FAILURE_ANSWERS - {TOO_MANY_ERRORS} for n in leaves)
    assert correct > 0 and wrong > 0 and errors > 0
    assert mixed_trees >= 2  # pairs need a node with both a correct and a wrong leaf below


def test_deterministic_and_independent_of_batching():
    qs = [question_prompt(item["question"]) for item in items("holdout", 1)]
    params = {"temperature": 1.0, "seed": 0}
    one = ScriptedTeacher(seed=3).generate(qs, 8, params)
    again = ScriptedTeacher(seed=3).generate(qs, 8, params)
    alone = [ScriptedTeacher(seed=3).generate([q], 8, params)[0] for q in qs]
    assert one == again == alone
    other = ScriptedTeacher(seed=4).generate(qs, 8, params)
    assert other != one
    # sampled first steps hold both code and direct answers over the 8 families x 8 samples
    texts = [c.text for conts in one for c in conts]
    assert any(t.startswith("<code>") for t in texts) and any(t.startswith("Working it out directly") for t in texts)


def test_unknown_question_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="bundled task family"):
        ScriptedTeacher().generate([question_prompt("Prove Fermat's last theorem.")], 1, {})
