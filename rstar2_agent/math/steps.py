"""The step format of rStar-Math and the rules that end a branch (terminal nodes).

A solution is written as code-augmented steps (``step_delim`` ``"\\n"``)::

    <code>
    # Step 1: ...
    x = 2 + 3
    <end_of_step>
    # Now print the final answer
    print(x)
    <end_of_code>
    <output>5<end_of_output>
    <answer>The answer is \\boxed{5}
    <end_of_answer>

One model continuation (its text plus the stop string it stopped on) is one step. A step that contains
"boxed" is an *answer*: a terminal node whose ``final_answer`` is the last ``\\boxed{}`` with ``\\text{}``
removed. Any other step is a ``python_interpreter`` action: the code of the current ``<code>`` block so far
(the earlier steps of the block replayed, as upstream executes every step of a block from its start) is run,
and the observation decides the rest:

* a step holding ``<end_of_code>`` gets ``"\\n<output>{obs}<end_of_output>"`` appended to its text;
* an observation containing "error" (any case) adds one to ``consecutive_errors``; reaching
  ``errors_threshold`` (when > 0) makes the node terminal with :data:`TOO_MANY_ERRORS`;
* a node that is not an answer and has reached ``max_depth`` (the root is depth 0, so a rollout has at most
  ``max_depth`` steps) ends with :data:`DEPTH_LIMIT` (upstream's spelling, kept so that tools which match
  on it keep working);
* a step that cannot be parsed (empty, or a "boxed" whose braces never close) ends with :data:`UNPARSABLE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from rstar2_agent.math.tree import Node, new_state
from rstar2_agent.reward.extract import last_boxed_content
from rstar2_agent.reward.normalize import replace_command

__all__ = [
    "CODE_START", "CODE_END", "STEP_END", "OUTPUT_START", "OUTPUT_END", "ANSWER_START", "ANSWER_END",
    "TOO_MANY_ERRORS", "DEPTH_LIMIT", "UNPARSABLE", "FAILURE_ANSWERS", "PYTHON_ACTION", "OBSERVATION_MAX_CHARS",
    "Continuation", "step_text", "extract_answer", "parse_step", "block_inputs", "extract_code", "step_code",
    "round_floats", "truncate_middle", "is_error_observation", "observed_text", "apply_observation",
    "apply_depth_limit",
]

CODE_START, CODE_END, STEP_END = "<code>", "<end_of_code>", "<end_of_step>"
OUTPUT_START, OUTPUT_END = "<output>", "<end_of_output>"
ANSWER_START, ANSWER_END = "<answer>", "<end_of_answer>"
PYTHON_ACTION = "python_interpreter"

TOO_MANY_ERRORS = "Too many consecutive steps have code errors."
DEPTH_LIMIT = "Fail to sove the problem within limited steps."  # sic: upstream's text
UNPARSABLE = "Fail to generate parsable text for next step."
FAILURE_ANSWERS = frozenset({TOO_MANY_ERRORS, DEPTH_LIMIT, UNPARSABLE})

OBSERVATION_MAX_CHARS = 1024


@dataclass(frozen=True)
class Continuation:
    """One generated continuation: its text, the stop string it ended on (None: EOS or length), its tokens."""

    text: str
    stop_reason: Optional[str] = None
    num_tokens: int = 0


def step_text(cont: Continuation) -> str:
    """The step a continuation makes: its text plus the stop string (the engine strips it, the step keeps it).

    >>> step_text(Continuation("print(1)\\n", "<end_of_code>"))
    'print(1)\\n<end_of_code>'
    """
    return cont.text + (cont.stop_reason if isinstance(cont.stop_reason, str) else "")


def extract_answer(text: str) -> Optional[str]:
    """The last complete ``\\boxed{}`` content with ``\\text{...}`` unwrapped, or None.

    >>> extract_answer(r"so \\boxed{1} and finally \\boxed{\\text{(B)}}")
    '(B)'
    """
    inner = last_boxed_content(text)
    if inner is None:
        return None
    return replace_command(inner, "text", lambda s: s).strip()


def parse_step(text: str) -> dict:
    """The ``state`` of a new node from its step text, plus whether the node is terminal.

    Returns a dict with the five state fields and ``terminal`` (bool).

    >>> parse_step(r"<answer>\\boxed{5}<end_of_answer>")["final_answer"]
    '5'
    >>> parse_step("x = 1\\n<end_of_step>")["action"]
    'python_interpreter'
    """
    if not text.strip():
        return {**new_state(text=text, final_answer=UNPARSABLE), "terminal": True}
    if "boxed" in text:
        answer = extract_answer(text)
        if not answer:
            return {**new_state(text=text, final_answer=UNPARSABLE), "terminal": True}
        return {**new_state(text=text, final_answer=answer), "terminal": True}
    return {**new_state(text=text, action=PYTHON_ACTION, action_input=text), "terminal": False}


def block_inputs(ancestors: Sequence[Node]) -> list[str]:
    """The ``action_input`` of the ancestors that belong to the current code block, oldest first.

    ``ancestors`` run from the parent upwards. Collection stops at the first one whose text holds
    ``<end_of_output>`` or ``<end_of_code>`` (its block is closed), and ancestors whose observation had a
    ``TimeoutError`` are left out, so a replay does not time out again.
    """
    inputs = []
    for node in ancestors:
        if OUTPUT_END in node.state["text"] or CODE_END in node.state["text"]:
            break
        if node.state["action_input"] and "TimeoutError" not in node.observation:
            inputs.append(node.state["action_input"])
    return inputs[::-1]


def extract_code(text: str) -> str:
    """The code between the last ``<code>`` and the next ``<end_of_code>``, ``<end_of_step>`` removed; empty
    when no ``<code>`` was opened (a prose step has nothing to run).

    >>> extract_code("<code>\\nx = 1\\n<end_of_step>\\nprint(x)\\n<end_of_code>")
    'x = 1\\n\\nprint(x)'
    >>> extract_code("First, 2 + 2 = 4.")
    ''
    """
    text = text.replace(STEP_END, "")
    start = text.rfind(CODE_START)
    if start < 0:
        return ""
    body = text[start + len(CODE_START):]
    end = body.find(CODE_END)
    if end >= 0:
        body = body[:end]
    return body.strip("\n")


def step_code(node: Node) -> str:
    """The program to run for ``node``: its block's earlier steps replayed, then its own step."""
    ancestors = node.path()[:-1][::-1]
    return extract_code("\n".join(block_inputs(ancestors) + [node.state["action_input"]]))


_LONG_DECIMAL = re.compile(r"(?<![\w.])(-?\d+\.\d{5,})(?![\w.])")


def round_floats(text: str, digits: int = 4) -> str:
    """Decimals with more than ``digits`` places in an output rounded to ``digits`` (upstream's interpreter
    does this, so ``1/3`` shows as ``0.3333`` and a step's text does not carry float noise into the prompt).
    Shorter decimals, integers, and numbers inside words or versions (``x1.000001``, ``1.2.3``) stay.

    >>> round_floats("x = 0.333333333, y = 2.5, pi ~ 3.14159265 and -1.000001")
    'x = 0.3333, y = 2.5, pi ~ 3.1416 and -1.0'
    """
    return _LONG_DECIMAL.sub(lambda m: repr(round(float(m.group(1)), digits)), text)


def truncate_middle(text: str, limit: int = OBSERVATION_MAX_CHARS) -> str:
    """Keep the first and last ``limit // 2`` characters of a long text, ``...`` between.

    >>> truncate_middle("abcdefghij", 4)
    'ab...ij'
    """
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "..." + text[len(text) - half:]


def is_error_observation(observation: str) -> bool:
    """Upstream's rule: any "error", in any case, counts as a code error."""
    return "error" in observation.lower()


def observed_text(step: str, observation: str) -> str:
    """A step's node text: the step, plus ``\\n<output>{obs}<end_of_output>`` when it closes its code block."""
    if CODE_END in step:
        return f"{step}\n{OUTPUT_START}{observation}{OUTPUT_END}"
    return step


def apply_observation(node: Node, observation: str, errors_threshold: int) -> None:
    """Attach an execution result to a python node: text, error count, and the error terminal rule."""
    observation = truncate_middle(round_floats(observation))
    node.observation = observation
    node.state["text"] = observed_text(node.state["action_input"], observation)
    if is_error_observation(observation):
        node.consecutive_errors += 1
        if 0 < errors_threshold <= node.consecutive_errors:
            node.is_terminal = True
            node.state["final_answer"] = TOO_MANY_ERRORS
    else:
        node.consecutive_errors = 0


def apply_depth_limit(node: Node, max_depth: int) -> None:
    """A node still open at ``max_depth`` ends the branch with :data:`DEPTH_LIMIT`: no step may follow it."""
    if not node.is_terminal and node.depth >= max_depth:
        node.is_terminal = True
        node.state["final_answer"] = DEPTH_LIMIT
