"""Reject-equal-reward filtering: a group whose traces all got the same reward has zero GRPO advantage
everywhere, so it only costs compute. This drops such groups and reports how many there were."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from rstar2_agent.down_sample.groups import group_indices

METRIC_PREFIX = "reject_equal_reward/"


def _as_scores(scores, uids) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one score per trace (1-D), got shape {scores.shape}")
    if len(uids) != len(scores):
        raise ValueError(f"got {len(scores)} scores but {len(uids)} uids")
    return scores


def _equal_groups(scores: np.ndarray, uids) -> list[tuple[np.ndarray, bool]]:
    """(row indices, all rewards equal) per group; "equal" means ``np.allclose`` to the group's first reward."""
    return [(idx, bool(np.allclose(scores[idx], scores[idx[0]]))) for idx in group_indices(uids).values()]


def reject_equal_reward(scores: Sequence[float] | np.ndarray, uids: Sequence[Hashable] | np.ndarray) -> np.ndarray:
    """Keep mask (one bool per trace) that drops every group whose rewards are all equal.

    A group is the set of traces sharing a uid; it is "equal" when every reward is ``np.allclose`` (default
    tolerances) to the group's first reward. A group of a single trace is always equal, hence dropped.

    Worked example: two prompts with 4 traces each. Prompt ``p`` has rewards 1, 0, 1, 0 (mixed: kept);
    prompt ``q`` has 0, 0, 0, 0 (all equal: dropped).

    >>> reject_equal_reward([1, 0, 1, 0, 0, 0, 0, 0], ["p"] * 4 + ["q"] * 4).tolist()
    [True, True, True, True, False, False, False, False]
    >>> reject_equal_reward([1.0, 1.0 + 1e-9, 0.0], ["a", "a", "b"]).tolist()   # allclose counts as equal
    [False, False, False]
    """
    scores = _as_scores(scores, uids)
    keep = np.zeros(len(scores), dtype=bool)
    for idx, equal in _equal_groups(scores, uids):
        keep[idx] = not equal
    return keep


def reject_equal_reward_metrics(scores: Sequence[float] | np.ndarray,
                                uids: Sequence[Hashable] | np.ndarray) -> dict[str, float]:
    """Group counts for the reject-equal step, under ``reject_equal_reward/``; computed whether or not it filters.

    * ``solve_non_equal_total``: groups with mixed rewards (the ones kept);
    * ``solve_equal_total``: groups whose rewards are all equal (the ones dropped);
    * ``solve_equal_total_ratio``: ``solve_equal_total`` / number of groups (0.0 for an empty batch);
    * ``solve_equal_zeros``: equal groups whose common reward is 0 (every trace failed, with 0/1 rewards);
    * ``solve_equal_non_all_zeros``: the other equal groups (e.g. every trace solved it).

    Worked example: groups ``p`` (1, 0, 1, 0), ``q`` (0, 0, 0, 0), ``r`` (1, 1, 1, 1), ``s`` (0, 1, 1, 1).

    >>> m = reject_equal_reward_metrics([1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1],
    ...                                 [u for u in "pqrs" for _ in range(4)])
    >>> for k, v in m.items(): print(k, v)
    reject_equal_reward/solve_non_equal_total 2
    reject_equal_reward/solve_equal_total 2
    reject_equal_reward/solve_equal_total_ratio 0.5
    reject_equal_reward/solve_equal_zeros 1
    reject_equal_reward/solve_equal_non_all_zeros 1
    """
    scores = _as_scores(scores, uids)
    groups = _equal_groups(scores, uids)
    equal = [idx for idx, eq in groups if eq]
    zeros = sum(1 for idx in equal if np.isclose(scores[idx[0]], 0.0))
    return {
        METRIC_PREFIX + "solve_non_equal_total": len(groups) - len(equal),
        METRIC_PREFIX + "solve_equal_total": len(equal),
        METRIC_PREFIX + "solve_equal_total_ratio": len(equal) / len(groups) if groups else 0.0,
        METRIC_PREFIX + "solve_equal_zeros": zeros,
        METRIC_PREFIX + "solve_equal_non_all_zeros": len(equal) - zeros,
    }
