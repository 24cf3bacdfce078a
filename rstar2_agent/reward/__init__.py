"""Outcome reward for rStar2-Agent: 1.0 if the last ``\\boxed{}`` answer matches the ground truth.

Public API (importing this package does not import verl or torch):

* :func:`compute_score` (``rstar2_agent.reward.scoring``): score one response in-process.
* :class:`RewardPool` (``rstar2_agent.reward.pool``): score many responses in worker processes with
  a hard per-item timeout; the way to score untrusted model output during training.
* ``rstar2_agent.reward.verl_manager``: the verl reward manager registered as ``code_judge``
  (import it explicitly; it needs verl).

Example::

    >>> from rstar2_agent.reward import compute_score
    >>> compute_score(r"... so \\boxed{\\frac12}", "0.5")
    1.0
"""

from rstar2_agent.reward.extract import last_boxed_content, strip_tool_responses
from rstar2_agent.reward.grader import answers_equal
from rstar2_agent.reward.mathverify_check import math_verify_equal
from rstar2_agent.reward.normalize import normalize_answer
from rstar2_agent.reward.pool import RewardPool, RewardPoolClosedError
from rstar2_agent.reward.scoring import compute_score, extract_model_answer

__all__ = [
    "compute_score",
    "extract_model_answer",
    "last_boxed_content",
    "strip_tool_responses",
    "normalize_answer",
    "answers_equal",
    "math_verify_equal",
    "RewardPool",
    "RewardPoolClosedError",
]
