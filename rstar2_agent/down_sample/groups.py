"""Group bookkeeping shared by the down-sampling steps: rows grouped by ``uid``, and which whole groups to keep so
that the batch size divides the data-parallel world size."""

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


def groups_to_keep_for_world_size(sizes: Sequence[int], world_size: int) -> list[bool]:
    """Which whole groups to keep so that the kept trace count is a multiple of ``world_size``.

    Groups are never cut: a group is kept or dropped as a whole, because GRPO normalises each reward against the
    rest of its group and a partial group would change those advantages. Among all choices that keep the count
    divisible, this keeps **the most traces**; among those, it drops groups **nearest the end of the batch**
    (``sizes`` is in batch order). Those are the groups that upstream's ``batch[: B // world_size * world_size]``
    would have cut or removed, so when the upstream truncation happens to end on a group boundary the two agree.

    Sizes that cannot combine: when no non-empty set of groups adds up to a multiple of ``world_size`` (e.g. two
    groups of 3 with ``world_size=4``), the only divisible choice is to drop everything, and every entry is False;
    the caller then has nothing to train on. Zero-size groups are kept (they change nothing).

    Worked example: groups of 16, 16, 12 and 4 traces (48) with world size 8. 48 is divisible, so all are kept.
    With world size 32 the best divisible count is 32: both 16+16 and 16+12+4 reach it; this keeps the earlier
    groups (16, 16) and drops the last two.

    >>> groups_to_keep_for_world_size([16, 16, 12, 4], 8)
    [True, True, True, True]
    >>> groups_to_keep_for_world_size([16, 16, 12, 4], 32)
    [True, True, False, False]
    >>> groups_to_keep_for_world_size([4, 6, 6], 8)   # 4+6+6=16 keeps all; nothing smaller is needed
    [True, True, True]
    >>> groups_to_keep_for_world_size([3, 3], 4)       # 3, 3 and 6 are not multiples of 4
    [False, False]

    Runs in O(len(sizes) * world_size) time and memory.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"group sizes must be >= 0, got {sizes}")
    w = int(world_size)
    if w == 1:
        return [True] * len(sizes)
    g = len(sizes)
    unreachable = -1
    # best[i][r]: the most traces that groups i..g-1 can keep with a kept total congruent to r (mod w).
    best = np.full((g + 1, w), unreachable, dtype=np.int64)
    best[g, 0] = 0
    for i in range(g - 1, -1, -1):
        s = sizes[i]
        nxt = best[i + 1]
        keep = np.roll(nxt, s % w)  # keep[r] = nxt[(r - s) % w]
        keep = np.where(keep == unreachable, unreachable, keep + s)
        best[i] = np.maximum(nxt, keep)
    # Walk forward, keeping each group whenever that still reaches the optimum: earlier groups win ties.
    out: list[bool] = []
    r = 0
    for i, s in enumerate(sizes):
        rest = best[i + 1, (r - s) % w]
        if rest != unreachable and rest + s == best[i, r]:
            out.append(True)
            r = (r - s) % w
        else:
            out.append(False)
    return out
