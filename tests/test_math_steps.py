"""Step format and terminal rules of the rStar-Math search."""

from __future__ import annotations

from rstar2_agent.math import steps
from rstar2_agent.math.steps import Continuation
from rstar2_agent.math.tree import Node


def child_with(parent: Node, text: str) -> Node:
    parsed = steps.parse_step(text)
    terminal = parsed.pop("terminal")
    node = parent.add_child(parsed)
    node.is_terminal = terminal
    return node


def test_step_text_keeps_the_stop_string():
    assert steps.step_text(Continuation("x=1\n", "<end_of_step>")) == "x=1\n<end_of_step>"
    assert steps.step_text(Continuation("eos here", None)) == "eos here"


def test_boxed_step_is_terminal_answer_with_text_stripped():
    p = steps.parse_step(r"<answer>so it is \boxed{3} no, \boxed{\text{(C)}}" + "\n<end_of_answer>")
    assert p["terminal"] and p["final_answer"] == "(C)" and p["action"] == ""
    nested = steps.parse_step(r"\boxed{\frac{1}{2}}")
    assert nested["final_answer"] == r"\frac{1}{2}"


def test_unparsable_steps():
    assert steps.parse_step("")["final_answer"] == steps.UNPARSABLE
    broken = steps.parse_step(r"the answer is \boxed{12")
    assert broken["terminal"] and broken["final_answer"] == steps.UNPARSABLE


def test_python_step():
    p = steps.parse_step("<code>\nx = 2\n<end_of_step>")
    assert not p["terminal"]
    assert p["action"] == "python_interpreter" and p["action_input"] == "<code>\nx = 2\n<end_of_step>"


def test_step_code_replays_the_current_block_only():
    root = Node()
    first = child_with(root, "<code>\na = 1\n<end_of_step>")
    closed = child_with(first, "print(a)\n<end_of_code>")
    steps.apply_observation(closed, "1\n", errors_threshold=2)
    assert closed.state["text"] == "print(a)\n<end_of_code>\n<output>1\n<end_of_output>"
    second_block = child_with(closed, "<code>\nb = 2\n<end_of_step>")
    timed_out = child_with(second_block, "while True: pass\n<end_of_step>")
    steps.apply_observation(timed_out, "TimeoutError: timed out", errors_threshold=5)
    last = child_with(timed_out, "print(b)\n<end_of_code>")
    assert steps.step_code(first) == "a = 1"
    assert [line for line in steps.step_code(closed).splitlines() if line] == ["a = 1", "print(a)"]
    code = steps.step_code(last)
    assert "b = 2" in code and "print(b)" in code
    assert "a = 1" not in code  # the first block was closed
    assert "while True" not in code  # the timed-out step is not replayed


def test_extract_code_between_tags():
    text = "intro <code>\nx = 1\n<end_of_step>\ny = x\n<end_of_code>\nignored"
    assert steps.extract_code(text) == "x = 1\n\ny = x"
    assert steps.extract_code("Note that 2 + 2 = 4.\n<end_of_step>") == ""  # prose: nothing to run


def test_observation_truncated_in_the_middle():
    long = "a" * 600 + "MIDDLE" + "b" * 600
    out = steps.truncate_middle(long)
    assert len(out) == 1024 + 3 and out.startswith("a" * 512) and out.endswith("b" * 512)
    assert "MIDDLE" not in out
    assert steps.truncate_middle("short") == "short"


def test_consecutive_errors_reach_threshold():
    root = Node()
    n1 = child_with(root, "<code>\n1/0\n<end_of_step>")
    steps.apply_observation(n1, "ZeroDivisionError: division by zero", errors_threshold=2)
    assert n1.consecutive_errors == 1 and not n1.is_terminal
    assert n1.state["text"] == "<code>\n1/0\n<end_of_step>"  # no <end_of_code>: no output appended
    n2 = child_with(n1, "print(y)\n<end_of_code>")
    assert n2.consecutive_errors == 1  # inherited from the parent
    steps.apply_observation(n2, "NameError: name 'y' is not defined", errors_threshold=2)
    assert n2.is_terminal and n2.state["final_answer"] == steps.TOO_MANY_ERRORS
    assert "<output>NameError" in n2.state["text"]
    ok = child_with(n1, "print(2)\n<end_of_code>")
    steps.apply_observation(ok, "2", errors_threshold=2)
    assert ok.consecutive_errors == 0 and not ok.is_terminal


def test_error_detection_is_case_insensitive_and_threshold_zero_never_ends():
    assert steps.is_error_observation("an ERROR happened") and not steps.is_error_observation("42")
    node = child_with(Node(), "<code>\n1/0\n<end_of_step>")
    for _ in range(5):
        steps.apply_observation(node, "error", errors_threshold=0)
    assert not node.is_terminal and node.consecutive_errors == 5


def test_depth_limit():
    root = Node()
    a = child_with(root, "<code>\nx=1\n<end_of_step>")
    b = child_with(a, "y=2\n<end_of_step>")
    answer = child_with(a, r"\boxed{1}")
    steps.apply_depth_limit(a, max_depth=2)
    assert not a.is_terminal
    steps.apply_depth_limit(b, max_depth=2)
    assert b.is_terminal and b.state["final_answer"] == "Fail to sove the problem within limited steps."
    steps.apply_depth_limit(answer, max_depth=2)
    assert answer.state["final_answer"] == "1"
    assert b.is_terminal and not b.is_valid_leaf() and answer.is_valid_leaf()


def test_an_observation_gets_its_long_floats_rounded_before_it_is_truncated_into_the_node_text():
    node = Node()
    node.state.update(text="", action_input="<code>\nprint(1/3, 2.5, [0.1234567] * 400)\n<end_of_code>")
    steps.apply_observation(node, "0.3333333333333333 2.5 [" + ", ".join(["0.1234567"] * 400) + "]",
                            errors_threshold=2)
    assert node.observation.startswith("0.3333 2.5 [0.1235, 0.1235")
    assert len(node.observation) == steps.OBSERVATION_MAX_CHARS + 3 and "..." in node.observation
    assert node.state["text"].endswith(f"<output>{node.observation}<end_of_output>")
    assert steps.round_floats("v1.000001 and 1.2.345678 and 12345") == "v1.000001 and 1.2.345678 and 12345"
