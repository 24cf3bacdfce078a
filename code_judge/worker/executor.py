"""Worker-side handles on the zygotes of one worker slot: start them, route and send jobs, restart them."""

from __future__ import annotations

import logging
import os
import re
import select
import subprocess
import sys
import time
from typing import Callable, Optional

from code_judge.config import JudgeConfig
from code_judge.worker.protocol import read_frame, write_frame

log = logging.getLogger("code_judge.worker")
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ExecutorError(RuntimeError):
    """The zygote died or stopped answering; the job was not run to completion."""


def zygote_environment() -> dict:
    """The only environment the zygote (and so every job) ever sees: no REDIS_URI, no tokens, no keys."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": _PKG_PARENT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _names(csv: str) -> list[str]:
    return [m.strip() for m in csv.split(",") if m.strip()]


def preload_tiers(cfg: JudgeConfig) -> list[list[str]]:
    """Module lists of the zygote tiers: PRELOAD_MODULES, then each PRELOAD_TIERS set added on top.

    >>> preload_tiers(JudgeConfig(preload_modules="math", preload_tiers="numpy;sympy"))
    [['math'], ['math', 'numpy'], ['math', 'numpy', 'sympy']]
    """
    tiers = [_names(cfg.preload_modules)]
    for extra in filter(str.strip, cfg.preload_tiers.split(";")):
        tiers.append(tiers[-1] + _names(extra))
    return tiers


def zygote_settings(cfg: JudgeConfig, slot: int, modules: list[str], warmup: str = "") -> dict:
    return {
        "sandbox": cfg.sandbox,
        "slot": slot,
        "uid_base": cfg.sandbox_uid_base,
        "tmpfs_mb": cfg.tmpfs_size,
        "preload": modules,
        "warmup": warmup,
        "max_output_chars": cfg.max_stdout_error_length,
        "python_execute_command": cfg.python_execute_command,
        "cpp_compile_command": cfg.cpp_compile_command,
        "cpp_execute_command": cfg.cpp_execute_command,
        "limits": {
            "time_s": cfg.max_execution_time,
            "memory_mb": cfg.max_memory,
            "processes": cfg.max_processes,
            "file_size_mb": cfg.max_file_size,
            "open_files": cfg.max_open_files,
        },
    }


class ZygoteProcess:
    """One zygote subprocess: start it, send a job, wait for the answer, restart it if it dies."""

    def __init__(self, settings: dict, max_execution_time: float):
        self.settings = settings
        self.max_execution_time = max_execution_time
        self.proc: Optional[subprocess.Popen] = None
        self.isolation: dict = {}
        self.preload: dict = {}  # what the zygote actually preloaded: modules, loaded, failed {name: reason}

    def start(self) -> dict:
        self.stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-m", "code_judge.worker.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=zygote_environment(),
            cwd="/",
            close_fds=True,
        )
        write_frame(self.proc.stdin.fileno(), self.settings)
        ready = self._receive(timeout=300.0)
        if not ready.get("ready"):
            self.stop()
            raise ExecutorError(f"sandbox could not start: {ready.get('error')}")
        self.isolation = ready["isolation"]
        self.preload = ready.get("preload") or {}
        for name, reason in (self.preload.get("failed") or {}).items():
            log.warning("preload: %s not available (%s)", name, reason)
        if self.preload.get("warmup_error"):
            log.warning("preload: warm-up failed (%s)", self.preload["warmup_error"])
        return self.isolation

    def stop(self) -> None:
        """Close the zygote's input (it then ends its job process and exits); kill it if it does not."""
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def _receive(self, timeout: float, tick: Optional[Callable[[], None]] = None) -> dict:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExecutorError(f"sandbox gave no answer within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 2.0))
            if ready:
                try:
                    return read_frame(fd)
                except (EOFError, ValueError) as exc:
                    raise ExecutorError(f"sandbox process died ({exc})") from exc
            if tick is not None:
                tick()

    def run(self, job: dict, tick: Optional[Callable[[], None]] = None) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            write_frame(self.proc.stdin.fileno(), job)
            # The zygote enforces the time limit itself; the margin covers fork, compile and clean-up.
            result = self._receive(self.max_execution_time + 30, tick)
        except (ExecutorError, OSError) as exc:
            self.stop()
            raise ExecutorError(str(exc)) from exc
        if "error" in result:
            raise ExecutorError(result["error"])
        return result


class Executor:
    """The zygotes of one worker slot, and which job goes to which.

    A fork costs more the more memory the zygote holds (numpy doubles a bare interpreter, sympy doubles it
    again), so each slot keeps one zygote per preload tier (see `preload_tiers`; by default stdlib,
    + numpy, + sympy warmed up by PRELOAD_WARMUP). A Python job goes to the lightest tier that holds every
    tier module its source names (`import numpy as np` names numpy); C++ goes to the lightest.
    """

    def __init__(self, cfg: JudgeConfig, slot: int = 0):
        tiers = preload_tiers(cfg)
        self.zygotes = [
            ZygoteProcess(zygote_settings(cfg, slot, mods, cfg.preload_warmup if k == len(tiers) - 1 and k else ""),
                          cfg.max_execution_time)
            for k, mods in enumerate(tiers)
        ]
        self.routes = []  # (pattern of the top-level names a tier adds, tier index), heaviest first
        for k in range(len(tiers) - 1, 0, -1):
            added = sorted({m.split(".")[0] for m in tiers[k]} - {m.split(".")[0] for m in tiers[k - 1]})
            if added:
                self.routes.append((re.compile(r"\b(?:" + "|".join(map(re.escape, added)) + r")\b"), k))

    @property
    def isolation(self) -> dict:
        return self.zygotes[0].isolation

    @property
    def preload(self) -> list[dict]:
        """One entry per zygote tier: the modules it was asked to preload, those it has, those that failed."""
        return [z.preload for z in self.zygotes]

    def start(self) -> dict:
        for z in self.zygotes:
            z.start()
        return self.isolation

    def stop(self) -> None:
        for z in self.zygotes:
            z.stop()

    def zygote_for(self, job: dict) -> ZygoteProcess:
        if job.get("type") == "python":
            for pattern, k in self.routes:
                if pattern.search(job["solution"]):
                    return self.zygotes[k]
        return self.zygotes[0]

    def run(self, job: dict, tick: Optional[Callable[[], None]] = None) -> dict:
        """Run one job; `tick` is called every ~2 s while waiting (the worker's heartbeat)."""
        return self.zygote_for(job).run(job, tick)
