"""Resample-on-Correct (RoC) selection for one group: from the oversampled traces of one prompt, keep ``n``.

The group's positive/negative ratio is kept; negatives are kept as they come, positives are the ones with the
lowest penalty (fewest tool errors, cleanest answer format; see :mod:`rstar2_agent.down_sample.penalty`).
Deterministic, like upstream's released code: no sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _check_values(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per trace), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def roc_quotas(num_neg: int, num_pos: int, n: int, min_neg: int, min_pos: int) -> tuple[int, int]:
    """How many negatives and positives to keep, ``(z, p)`` with ``z + p == n``, for a group of
    ``num_neg + num_pos > n`` traces.

    1. Proportional quotas with Python's ``round`` (half to even):
       ``z = round(num_neg * n / size)``, ``p = round(num_pos * n / size)``.
    2. Minimums (upstream's rules): if ``z <= min(min_neg, num_neg)`` then ``z`` becomes that and ``p = n - z``;
       then if ``p <= min(min_pos, num_pos)`` then ``p`` becomes that and ``z = n - p``.
    3. Count repair. When neither rule fires and both exact shares end in exactly .5, the two roundings can both
       go up or both go down, and ``z + p`` is ``n + 1`` or ``n - 1`` (upstream's count assertion then fails).
       The odd slot goes to the negatives: a surplus is trimmed from the positives, a shortfall filled with a
       negative (a positive when no negative is left). Rationale: RoC is a quality filter on positives, so
       where the ratio cannot be kept exactly it keeps one positive fewer (the worst one) rather than one more.
       Neither quota is at its minimum here (else a rule would have fired), so the repair keeps the minimums.

    Negative minimums mean "no minimum" (upstream's default is -1). Step 2 never asks for more traces of a kind
    than the group has, and never leaves the other kind short (shown in the tests).

    Worked example, a group of 6 traces kept down to 3. Three negatives and three positives: both exact shares
    are 1.5, both round to 2, so one positive is trimmed. One negative and five positives: 0.5 and 2.5 both
    round down, so a negative is added. With ``min_neg=2`` the first group keeps 2 negatives by rule 2 (p = 1).

    >>> roc_quotas(3, 3, 3, -1, -1), roc_quotas(1, 5, 3, -1, -1), roc_quotas(3, 3, 3, 2, 1)
    ((2, 1), (1, 2), (2, 1))
    >>> roc_quotas(3, 29, 16, 2, 2)   # rollout.n=32 -> 16 with min 2/2: 1.5 -> 2 negatives, 14.5 -> 14 positives
    (2, 14)
    """
    size = num_neg + num_pos
    if not 0 < n < size:
        raise ValueError(f"roc_quotas needs 0 < n < group size, got n={n} for a group of {size}")
    z = round(num_neg * n / size)
    p = round(num_pos * n / size)
    floor_neg = min(min_neg, num_neg)
    if z <= floor_neg:
        z, p = floor_neg, n - floor_neg
    floor_pos = min(min_pos, num_pos)
    if p <= floor_pos:
        z, p = n - floor_pos, floor_pos
    while z + p > n:        # both shares rounded up: give the odd slot to the negatives
        if p > max(floor_pos, 0):
            p -= 1
        else:
            z -= 1
    while z + p < n:        # both shares rounded down: same rule
        if z < num_neg:
            z += 1
        else:
            p += 1
    assert 0 <= z <= num_neg and 0 <= p <= num_pos and z + p == n, (num_neg, num_pos, n, min_neg, min_pos, z, p)
    return z, p


def select_roc(rewards: Sequence[float] | np.ndarray, penalties: Sequence[float] | np.ndarray, n: int,
               min_neg: int = -1, min_pos: int = -1) -> list[int]:
    """Indices (into the group, ascending) of the traces to keep from one group.

    A trace is negative when its reward is <= 0 and positive when it is > 0.

    * ``n <= 0``: no selection, every index is returned (the minimums are not checked).
    * The group has at most ``n`` traces: returned whole. (Upstream drops a group smaller than ``n``; this
      function leaves that to the caller, and :func:`~rstar2_agent.down_sample.select_rows` drops it.)
    * Otherwise exactly ``n`` indices: ``z`` negatives and ``p`` positives with the quotas of
      :func:`roc_quotas` (the group's ratio, at least ``min_neg`` negatives and ``min_pos`` positives where the
      group has them, and a repair where rounding misses ``n`` by one). The negatives are the first ``z`` in
      group order; the positives are the ``p`` with the lowest penalty, ties broken by group order (stable
      sort). ``penalties`` of negatives are ignored.

    Upstream also "keeps the whole group" when both quotas fall below their minimums; with
    ``min_neg + min_pos <= n`` (checked here) that cannot happen, since the rounded quotas sum to at least
    ``n - 1``.

    Worked example, a 4-trace group kept down to 2: rewards 0, 1, 1, 0 with penalties 0.9, 1.5, 0.5, 0.1.
    Quotas round(2*2/4) = 1 negative, 1 positive. The first negative is trace 0; the best positive is trace 2
    (penalty 0.5 beats 1.5). Trace 3's low penalty does not matter: it is a negative.

    >>> select_roc([0, 1, 1, 0], [0.9, 1.5, 0.5, 0.1], n=2)
    [0, 2]
    >>> select_roc([0, 1, 1, 0], [0.9, 1.5, 0.5, 0.1], n=3)   # quotas 1.5 -> 2 and 1.5 -> 2: trim a positive
    [0, 2, 3]
    >>> select_roc([0, 1, 1, 0], [0.9, 1.5, 0.5, 0.1], n=0)   # no selection
    [0, 1, 2, 3]
    """
    rewards = _check_values("rewards", rewards)
    penalties = _check_values("penalties", penalties)
    if len(rewards) != len(penalties):
        raise ValueError(f"got {len(rewards)} rewards but {len(penalties)} penalties")
    n = _check_int("n", n)
    min_neg = _check_int("min_neg", min_neg)
    min_pos = _check_int("min_pos", min_pos)
    size = len(rewards)
    if n <= 0 or size <= n:
        return list(range(size))
    if max(min_neg, 0) + max(min_pos, 0) > n:
        raise ValueError(f"min_neg + min_pos must be <= n, got {min_neg} + {min_pos} > {n}")
    neg = [i for i in range(size) if rewards[i] <= 0]
    pos = sorted((i for i in range(size) if rewards[i] > 0), key=lambda i: penalties[i])  # stable
    z, p = roc_quotas(len(neg), len(pos), n, min_neg, min_pos)
    return sorted(neg[:z] + pos[:p])


