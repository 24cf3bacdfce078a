"""The second checker: the ``math-verify`` package (``parse`` + ``verify``), made safe to call anywhere.

Two facts about math-verify shape this module:

* Its time limits use ``signal.alarm``, which only works in the main thread (elsewhere it raises
  ``ValueError``) and which would cancel an outer caller's own alarm. We pass its timeouts only
  when :func:`~rstar2_agent.reward.timeouts.alarm_available` says the alarm is free; otherwise we
  pass ``None`` and rely on the caller (the :class:`~rstar2_agent.reward.pool.RewardPool` kills
  slow workers).
* Its LaTeX parser (``latex2sympy2_extended``) ships one generated grammar per ANTLR runtime. We keep
  ANTLR 4.9.3 because hydra/omegaconf (verl's config system) require it; under 4.9.3 math-verify
  does not read ``\\boxed{50\\%}`` at all, while under 4.13 it reads ``50\\%`` as ``1/2``. So percent
  signs are removed before math-verify sees the answer, which gives the same result on either
  runtime and matches our own rule ``50\\% == 50``.
"""

from __future__ import annotations

import logging

try:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
except ImportError:  # pragma: no cover - math-verify is a declared dependency of the train extra
    parse = verify = None

from rstar2_agent.reward.normalize import strip_dollars, strip_percent, strip_trailing_period
from rstar2_agent.reward.timeouts import alarm_available

__all__ = ["prepare_for_math_verify", "math_verify_equal"]

# math-verify logs a warning every process when timeouts are disabled; we disable them on purpose.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def prepare_for_math_verify(answer: str) -> str:
    """Light clean-up before math-verify: no ``$``, no percent signs, no final period.

    >>> prepare_for_math_verify(r"50\\%.")
    '50'
    """
    return strip_trailing_period(strip_percent(strip_dollars(answer))).strip()


def math_verify_equal(prediction: str, ground_truth: str, timeout_s: int = 3) -> bool:
    """True if math-verify judges ``prediction`` equal to ``ground_truth`` (both bare answers).

    Never raises; errors and timeouts count as "not equal".

    >>> math_verify_equal(r"\\sqrt{18}", r"3\\sqrt{2}")
    True
    """
    if parse is None:  # pragma: no cover
        return False
    timeout = timeout_s if alarm_available() else None
    config = (LatexExtractionConfig(), ExprExtractionConfig())
    try:
        gold = parse(f"${prepare_for_math_verify(ground_truth)}$", extraction_config=config, parsing_timeout=timeout)
        pred = parse(f"${prepare_for_math_verify(prediction)}$", extraction_config=config, parsing_timeout=timeout)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=timeout))
    except BaseException as exc:  # noqa: BLE001 - includes math-verify's TimeoutException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return False
