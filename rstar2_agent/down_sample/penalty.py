"""RoC penalties of one trajectory, from its decoded text (special tokens kept, tool output included).

The penalty ranks *positive* traces only (lower is better); it never changes the reward. It has two parts, each
switched on separately:

* tool-error ratio: the share of ``<tool_response>...</tool_response>`` blocks that report an error
  (:func:`error_ratio_penalty`), 0.5 for a trajectory that never used the tool;
* answer format: 1.0 for a broken ``<answer>`` structure, else a charge for extra answers per assistant turn
  (:func:`answer_format_penalty`).

Their sum (:func:`roc_penalty`) lies in [0, 2]. The ``count_*`` helpers are the per-trace numbers behind the
batch metrics.
"""

from __future__ import annotations

import re

TOOL_RESPONSE_RE = re.compile(r"<tool_response>.*?</tool_response>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>.*?</answer>", re.DOTALL)
ASSISTANT_TURN_RE = re.compile(r"<\|im_start\|>assistant.*?<\|im_end\|>", re.DOTALL)
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
ERROR_MARKER = "error"
NO_TOOL_RESPONSE_PENALTY = 0.5


def count_tool_responses(text: str) -> int:
    """Number of ``<tool_response>...</tool_response>`` blocks (non-greedy, across lines).

    >>> count_tool_responses("<tool_response>\\nok\\n</tool_response> x <tool_response>1</tool_response>")
    2
    >>> count_tool_responses("<tool_response> never closed")
    0
    """
    return len(TOOL_RESPONSE_RE.findall(text))


def count_tool_errors(text: str) -> int:
    """Number of tool-response blocks whose lowercased text contains ``"error"`` (e.g. ``NameError``).

    This is upstream's rule, a plain substring test: a failure report that never says "error" (our tools' bare
    ``Tool call failure`` plus ``reason: timeout``, say) is not counted, and output that merely prints the word
    is.

    >>> count_tool_errors("<tool_response>\\nTool call failure\\nstderr: NameError at line 1\\n</tool_response>"
    ...                   "<tool_response>\\nTool call success\\nstdout: 42\\n</tool_response>")
    1
    """
    return sum(1 for block in TOOL_RESPONSE_RE.findall(text) if ERROR_MARKER in block.lower())


def error_ratio_penalty(text: str) -> float:
    """Share of tool responses that are errors; 0.5 when the trajectory has no tool response at all.

    Worked example: one failing and three succeeding tool calls give 1/4; no tool call gives 0.5, which ranks a
    tool-free positive between a clean tool user (0) and a mostly failing one.

    >>> ok = "<tool_response>\\nTool call success\\nstdout: 42\\n</tool_response>"
    >>> bad = ("<tool_response>\\nTool call failure\\nstderr: ZeroDivisionError at line 1: division by zero"
    ...        "\\n</tool_response>")
    >>> error_ratio_penalty(bad + ok + ok + ok)
    0.25
    >>> error_ratio_penalty("<reason>2+2=4</reason> <answer>\\\\boxed{4}</answer>")
    0.5
    """
    total = count_tool_responses(text)
    if total == 0:
        return NO_TOOL_RESPONSE_PENALTY
    return count_tool_errors(text) / total


def count_answers(text: str) -> int:
    """Number of closed ``<answer>...</answer>`` pairs (non-greedy, across lines).

    >>> count_answers("<answer>\\\\boxed{1}</answer> then <answer>\\\\boxed{2}</answer> and <answer> open")
    2
    """
    return len(ANSWER_RE.findall(text))


def count_assistant_turns(response_text: str, prompt_text: str = "") -> int:
    """Complete assistant turns (``<|im_start|>assistant ... <|im_end|>``) in the response.

    With ``prompt_text`` given, a turn whose header ends the prompt (the generation prompt
    ``<|im_start|>assistant\\n<reason>``) and whose body and ``<|im_end|>`` are in the response counts too:
    the result is the turns of ``prompt_text + response_text`` minus the turns entirely inside the prompt.
    Without it, only turns whose header is itself in the response are counted, which is upstream's count
    and misses the first turn (see :func:`answer_format_penalty`).

    Worked example: the model answered in two turns with one tool call in between.

    >>> prompt = "<|im_start|>user\\nWhat is 6*7?<|im_end|>\\n<|im_start|>assistant\\n<reason>"
    >>> response = ("Compute it.\\n<tool_call>\\n{...}\\n</tool_call><|im_end|>\\n"
    ...             "<|im_start|>user\\n<tool_response>\\nstdout: 42\\n</tool_response><|im_end|>\\n"
    ...             "<|im_start|>assistant\\n<reason>It is 42.</reason> <answer>\\\\boxed{42}</answer><|im_end|>")
    >>> count_assistant_turns(response), count_assistant_turns(response, prompt)
    (1, 2)
    """
    if not prompt_text:
        return len(ASSISTANT_TURN_RE.findall(response_text))
    return len(ASSISTANT_TURN_RE.findall(prompt_text + response_text)) - len(ASSISTANT_TURN_RE.findall(prompt_text))


def answer_format_penalty(response_text: str, num_assistant_turns: int | None = None) -> float:
    """Answer-format penalty in [0, 1] of one response.

    Rules, in order:

    1. 1.0 if ``<answer>`` or ``</answer>`` does not occur;
    2. 1.0 if the raw count of either tag differs from the number of closed pairs (a stray or nested tag);
    3. 1.0 if there is no complete assistant turn;
    4. otherwise ``min((closed_pairs - 1) / num_turns, 1.0)``: one answer is free, each extra one costs a share
       of the turns.

    ``num_turns`` is ``num_assistant_turns`` when given, else the ``<|im_start|>assistant ... <|im_end|>``
    matches in ``response_text`` (upstream's count).

    **The upstream quirk, and what to pass.** Upstream counts turns in the decoded *response* only, but the first
    assistant header (``<|im_start|>assistant\\n<reason>``) is the end of the *prompt*. So only the second and
    later assistant turns are counted, and a trajectory that answers without ever calling the tool has zero
    turns and always gets 1.0; RoC then prefers tool-using positives whatever their quality. Counting in the
    full prompt+response text instead is not an option here: our system and user prompts quote the tags
    (``<answer> answer here </answer>``), which rule 2 would see. Hence the extra argument: tag counts come from
    the response, and the caller passes the real number of assistant turns, for example
    ``count_assistant_turns(response, prompt)`` (:func:`~rstar2_agent.trainer.selection.rows_to_keep` passes the
    generation header for the prompt). Leave it ``None`` to reproduce upstream exactly.

    Worked example: a one-turn answer with no tool call. Upstream's count sees no turn (1.0); with the real
    count of 1 turn and one answer, the penalty is 0. Two answers over two turns cost (2-1)/2 = 0.5.

    >>> one_turn = "2+2=4.</reason> <answer>\\\\boxed{4}</answer><|im_end|>"
    >>> answer_format_penalty(one_turn), answer_format_penalty(one_turn, num_assistant_turns=1)
    (1.0, 0.0)
    >>> answer_format_penalty("<answer>1</answer> <answer>2</answer>", num_assistant_turns=2)
    0.5
    >>> answer_format_penalty("<answer>1</answer> </answer>", num_assistant_turns=1)   # stray closing tag
    1.0
    """
    if num_assistant_turns is not None and (isinstance(num_assistant_turns, bool) or num_assistant_turns < 0):
        raise ValueError(f"num_assistant_turns must be a non-negative integer or None, got {num_assistant_turns!r}")
    if ANSWER_OPEN not in response_text or ANSWER_CLOSE not in response_text:
        return 1.0
    closed = count_answers(response_text)
    if response_text.count(ANSWER_OPEN) != closed or response_text.count(ANSWER_CLOSE) != closed:
        return 1.0
    turns = count_assistant_turns(response_text) if num_assistant_turns is None else int(num_assistant_turns)
    if turns == 0:
        return 1.0
    return min((closed - 1) / turns, 1.0)


def roc_penalty(response_text: str, error_ratio: bool = True, answer_format: bool = True,
                num_assistant_turns: int | None = None) -> float:
    """RoC penalty of one trajectory: ``error_ratio_penalty`` (if ``error_ratio``) plus ``answer_format_penalty``
    (if ``answer_format``), in [0, 2]; 0.0 with both off.

    ``num_assistant_turns`` goes to :func:`answer_format_penalty` (``None`` = upstream's count, which misses the
    first turn; see there).

    Worked example, a 4-trace RoC group's positives. (a) one tool call that succeeds, answered in the second turn;
    (b) the same with a failing tool call; (c) no tool call, one answer. With the real turn counts (a) costs
    0 + 0, (b) 1 + 0, (c) 0.5 + 0. Upstream's count gives (c) 0.5 + 1.0, because its only turn is not seen.

    >>> call = "<tool_call>\\n{...}\\n</tool_call><|im_end|>\\n"
    >>> def turn2(out):
    ...     return ("<|im_start|>user\\n<tool_response>\\n" + out + "\\n</tool_response><|im_end|>\\n"
    ...             "<|im_start|>assistant\\n<reason>So 42.</reason> <answer>\\\\boxed{42}</answer><|im_end|>")
    >>> a = call + turn2("Tool call success\\nstdout: 42")
    >>> b = call + turn2("Tool call failure\\nstderr: SyntaxError at line 1: invalid syntax")
    >>> c = "6*7=42.</reason> <answer>\\\\boxed{42}</answer><|im_end|>"
    >>> [roc_penalty(t, num_assistant_turns=n) for t, n in [(a, 2), (b, 2), (c, 1)]]
    [0.0, 1.0, 0.5]
    >>> roc_penalty(a), roc_penalty(c)          # upstream's turn count
    (0.0, 1.5)
    >>> roc_penalty(b, error_ratio=False), roc_penalty(c, answer_format=False)
    (0.0, 0.5)
    """
    penalty = 0.0
    if error_ratio:
        penalty += error_ratio_penalty(response_text)
    if answer_format:
        penalty += answer_format_penalty(response_text, num_assistant_turns)
    return penalty
