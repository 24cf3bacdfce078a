"""Group bookkeeping shared by the down-sampling steps: rows grouped by ``uid``."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def group_indices(uids: Sequence[Hashable] | np.ndarray) -> dict[Hashable, np.ndarray]:
    """Row indices of each group (rows sharing a uid), groups in order of first appearance.

    Rows of a group need not be adjacent; each index array is ascending.

    >>> groups = group_indices(["b", "a", "b", "a", "c"])
    >>> {uid: idx.tolist() for uid, idx in groups.items()}
    {'b': [0, 2], 'a': [1, 3], 'c': [4]}
    """
    rows: dict[Hashable, list[int]] = {}
    for i, uid in enumerate(uids):
        rows.setdefault(uid, []).append(i)
    return {uid: np.asarray(idx, dtype=np.int64) for uid, idx in rows.items()}
