"""How many CPUs this process may use: the one place the engine (torch threads) and the reward pool (worker
processes) ask, so both see the same number under `taskset`, cgroup cpusets and containers."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else all of them), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - non-Linux
