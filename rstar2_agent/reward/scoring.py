"""``compute_score``: 1.0 if the model's last boxed answer equals the ground truth, else 0.0.

Steps, one function each:

1. :func:`extract_model_answer`: drop ``<tool_response>`` blocks, then take the last ``\\boxed{}``
   (or ``\\fbox{}``). No box means no answer (0.0): the prompt tells the model its answer is read
   from ``\\boxed{}``.
2. Our normalising grader (:func:`rstar2_agent.reward.grader.answers_equal`).
3. math-verify (:func:`rstar2_agent.reward.mathverify_check.math_verify_equal`).

The answer is correct if either checker says so, with two exceptions where our grader alone decides:

* one side is a plain integer and the other a plain non-integer number: the exact comparison decides
  (math-verify rounds floats to 6 places and would otherwise accept ``2`` for ``2.0000001``);
* the model's answer is a number too large to evaluate (over 10,000 digits, e.g. ``9^{9^{9^{9}}}``):
  math-verify would spend its whole time limit on it (3 s of CPU per item) and could only time out,
  so it is not asked; an identical ground truth string still matches through our grader.

``compute_score`` has no hard time limit of its own. Untrusted model output should be scored through
:class:`rstar2_agent.reward.pool.RewardPool`, which runs it in worker processes and kills slow ones.
"""

from __future__ import annotations

from rstar2_agent.reward.extract import last_boxed_content, strip_tool_responses, unwrap_boxed
from rstar2_agent.reward.grader import answers_equal
from rstar2_agent.reward.latex_sympy import is_astronomical
from rstar2_agent.reward.mathverify_check import math_verify_equal
from rstar2_agent.reward.normalize import normalize_answer
from rstar2_agent.reward.numeric import is_integer_value, parse_exact_number

__all__ = ["compute_score", "extract_model_answer", "integer_vs_non_integer", "too_large_to_check"]


def extract_model_answer(solution_str: str) -> str | None:
    """Return the last boxed answer in the model's own text (tool output removed), or None.

    >>> extract_model_answer(r"\\boxed{1} <tool_response>\\boxed{2}</tool_response>")
    '1'
    """
    return last_boxed_content(strip_tool_responses(solution_str))


def integer_vs_non_integer(prediction: str, ground_truth: str) -> bool:
    """True when one answer is a plain integer and the other a plain non-integer number.

    Such pairs are never equal, whatever a rounding checker says.

    >>> integer_vs_non_integer("2", "2.0000001"), integer_vs_non_integer("2", "2.0")
    (True, False)
    """
    x = parse_exact_number(normalize_answer(prediction))
    y = parse_exact_number(normalize_answer(ground_truth))
    if x is None or y is None:
        return False
    return is_integer_value(x) != is_integer_value(y)


def too_large_to_check(answer: str) -> bool:
    """True when the answer denotes a number too large to evaluate (see the module docstring).

    >>> too_large_to_check(r"9^{9^{9^{9}}}"), too_large_to_check(r"2^{10}")
    (True, False)
    """
    return is_astronomical(normalize_answer(answer))


def compute_score(solution_str: str, ground_truth: str) -> float:
    """Score a model response against a ground truth: 1.0 (correct) or 0.0 (anything else).

    Pass only text the model wrote; ``<tool_response>`` blocks are removed anyway.

    >>> compute_score(r"so the answer is \\boxed{\\dfrac{1}{2}}.", "0.5")
    1.0
    >>> compute_score(r"\\boxed{3} <tool_response>\\boxed{5}</tool_response>", "5")
    0.0
    """
    try:
        answer = extract_model_answer(str(solution_str))
        if answer is None or not answer.strip():
            return 0.0
        truth = unwrap_boxed(str(ground_truth))
        if answers_equal(answer, truth):
            return 1.0
        if integer_vs_non_integer(answer, truth) or too_large_to_check(answer):
            return 0.0
        return 1.0 if math_verify_equal(answer, truth) else 0.0
    except Exception:  # noqa: BLE001 - a reward function must not crash training
        return 0.0
