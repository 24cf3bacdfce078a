"""Supervisor of the worker processes on one machine (`rstar2-agent judge workers`).

- starts `--max-workers` worker processes, each with its own zygote and sandbox uid;
- replaces a worker that dies, and at once puts the job it was running back on the queue (or answers it
  `internal_error` after MAX_JOB_ATTEMPTS deaths) instead of waiting for its heartbeat to expire;
- every few seconds reaps workers of *any* machine whose heartbeat expired (a node that vanished);
- stops all of them (exit status 1) when a worker's sandbox refuses to start (e.g. SANDBOX=strict without
  namespaces): respawning could not help;
- on SIGTERM/SIGINT lets running jobs finish (up to MAX_EXECUTION_TIME + 5 s), then stops.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Optional

import redis

from code_judge.config import JudgeConfig
from code_judge.queue import REAP_SCRIPT, Keys
from code_judge.worker.process import EXIT_SANDBOX, REDIS_ERRORS, connect

log = logging.getLogger("code_judge.manager")


class WorkerManager:
    def __init__(self, cfg: JudgeConfig, num_workers: Optional[int] = None):
        self.cfg = cfg
        self.n = num_workers or cfg.max_workers
        self.keys = Keys(cfg)
        self.redis = connect(cfg)
        self.reap = self.redis.register_script(REAP_SCRIPT)
        self.procs: dict[int, tuple[subprocess.Popen, str]] = {}
        self.stopping = False
        self.failed = False  # a worker's sandbox refused to start: stop all, exit non-zero
        self.restarts = 0
        self._host = socket.gethostname()

    def _spawn(self, slot: int) -> None:
        wid = f"{self._host}:{os.getpid()}:{slot}:{uuid.uuid4().hex[:8]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "code_judge.worker.process", "--slot", str(slot), "--worker-id", wid],
            env=dict(os.environ, REDIS_URI=self.cfg.require_redis()),
        )
        self.procs[slot] = (proc, wid)

    def _reap(self, forced: list[str]) -> None:
        try:
            requeued, failed = self.reap(
                keys=[self.keys.queue, self.keys.workers, self.keys.stats],
                args=[self.keys.prefix, self.cfg.max_job_attempts, *forced],
            )
        except REDIS_ERRORS as exc:
            log.warning("reaper: Redis unavailable (%s); will retry", exc)
            return
        except redis.ResponseError as exc:
            log.error("reaper script failed: %s", exc)
            return
        if requeued or failed:
            log.warning("reaper: %d job(s) of dead workers requeued, %d answered internal_error", requeued, failed)

    def run(self) -> bool:
        """Run until SIGTERM/SIGINT; False if a sandbox could not start (then everything is stopped)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for slot in range(self.n):
            self._spawn(slot)
        log.info("started %d workers (pids %s)", self.n, [p.pid for p, _ in self.procs.values()])
        next_reap = 0.0
        while not self.stopping:
            dead = []
            for slot, (proc, wid) in list(self.procs.items()):
                if proc.poll() == EXIT_SANDBOX:
                    log.error("worker %s: the sandbox refused to start (see above); stopping all workers", wid)
                    self.failed = self.stopping = True
                    break
                if proc.poll() is not None:
                    log.warning("worker %s (pid %d) died with %s; replacing it", wid, proc.pid, proc.returncode)
                    dead.append(wid)
                    self.restarts += 1
                    self._spawn(slot)
            now = time.monotonic()
            if dead or now >= next_reap:
                self._reap(dead)
                next_reap = now + max(1.0, self.cfg.heartbeat_ttl / 2)
            time.sleep(0.2)
        self._shutdown()
        return not self.failed

    def request_stop(self, *_) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + self.cfg.max_process_time
        for proc, _ in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("all workers stopped")
