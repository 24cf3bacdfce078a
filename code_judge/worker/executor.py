"""Worker-side handle on one zygote: start it, send a job, wait for the answer, restart it if it dies."""

from __future__ import annotations

import logging
import os
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


def zygote_settings(cfg: JudgeConfig, slot: int) -> dict:
    return {
        "sandbox": cfg.sandbox,
        "slot": slot,
        "uid_base": cfg.sandbox_uid_base,
        "tmpfs_mb": cfg.tmpfs_size,
        "preload": [m.strip() for m in cfg.preload_modules.split(",") if m.strip()],
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


class Executor:
    def __init__(self, cfg: JudgeConfig, slot: int = 0):
        self.cfg = cfg
        self.slot = slot
        self.proc: Optional[subprocess.Popen] = None
        self.isolation: dict = {}

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
        write_frame(self.proc.stdin.fileno(), zygote_settings(self.cfg, self.slot))
        ready = self._receive(timeout=300.0)
        if not ready.get("ready"):
            self.stop()
            raise ExecutorError(f"sandbox could not start: {ready.get('error')}")
        self.isolation = ready["isolation"]
        if ready.get("preload_failed"):
            log.info("preload: modules not available: %s", ", ".join(ready["preload_failed"]))
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
        """Run one job; `tick` is called every ~2 s while waiting (the worker's heartbeat)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            write_frame(self.proc.stdin.fileno(), job)
            # The zygote enforces the time limit itself; the margin covers fork, compile and clean-up.
            result = self._receive(self.cfg.max_execution_time + 30, tick)
        except (ExecutorError, OSError) as exc:
            self.stop()
            raise ExecutorError(str(exc)) from exc
        if "error" in result:
            raise ExecutorError(result["error"])
        return result
