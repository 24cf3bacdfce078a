"""One worker: take a job from Redis, run it in its zygote, push the result back. Survives Redis restarts.

Started by the manager as `python -m code_judge.worker.process --slot N --worker-id ID`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import time
import uuid
from typing import Callable, Optional, TypeVar

import redis

from code_judge.config import JudgeConfig
from code_judge.models import Reason, SUPPORTED_TYPES, error_result
from code_judge.queue import LATENCY_SAMPLES, Keys, redis_options, result_message, started_message
from code_judge.worker.executor import Executor, ExecutorError

log = logging.getLogger("code_judge.worker")
T = TypeVar("T")
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
EXIT_SANDBOX = 78  # EX_CONFIG: the sandbox refused to start; the manager stops rather than respawn


def connect(cfg: JudgeConfig) -> redis.Redis:
    return redis.Redis.from_url(cfg.require_redis(), **redis_options(cfg))


def save_error_case(root: str, sub: dict, result: dict) -> None:
    """ERROR_CASE_SAVE_PATH: keep a failed submission and its result under <root>/<sub_id>/ for debugging."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(sub.get("sub_id") or uuid.uuid4()))[:120].lstrip(".") or "case"
    case_dir = os.path.join(root, name)
    try:
        os.makedirs(case_dir, exist_ok=True)
        for file_name, content in (("submission.json", sub), ("result.json", result)):
            with open(os.path.join(case_dir, file_name), "w", encoding="utf-8", errors="surrogatepass") as f:
                json.dump(content, f, indent=2)
        with open(os.path.join(case_dir, "solution.txt"), "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(sub.get("solution") or "")
    except OSError as exc:
        log.warning("could not save error case to %s: %s", case_dir, exc)


def build_result(sub: dict, run: dict) -> dict:
    """Turn the zygote's answer into a public SubmissionResult dict."""
    run_success = run["exit_code"] == 0 and not run["timed_out"]
    success = run_success and run["matches_expected"] is not False
    reason = Reason.WORKER_TIMEOUT if run["timed_out"] else Reason.NONE
    return {
        "sub_id": sub.get("sub_id"),
        "success": success,
        "run_success": run_success,
        "cost": round(run["cost"], 6),
        "stdout": run["stdout"],
        "stderr": run["stderr"],
        "reason": reason.value,
    }


class Worker:
    def __init__(self, cfg: JudgeConfig, slot: int, worker_id: str):
        self.cfg = cfg
        self.keys = Keys(cfg)
        self.wid = worker_id
        self.processing = self.keys.processing(worker_id)
        self.executor = Executor(cfg, slot)
        self.redis = connect(cfg)
        self.stopping = False
        self.executions = 0
        self._last_beat = 0.0

    # -- Redis with reconnects ------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T], what: str, give_up_at: Optional[float] = None) -> Optional[T]:
        """Run a Redis call until it works (Redis may be restarting), or until `give_up_at`."""
        delay = 0.1
        while True:
            try:
                return fn()
            except REDIS_ERRORS as exc:
                if give_up_at is not None and time.time() > give_up_at:
                    log.error("%s: giving up after Redis errors: %s", what, exc)
                    return None
                if self.stopping and give_up_at is None:
                    return None
                log.warning("%s: Redis unavailable (%s); retrying in %.1fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def heartbeat(self, force: bool = False) -> None:
        """Say this worker is alive (every quarter TTL). Whether it is busy is its processing list's length."""
        if force or time.time() - self._last_beat >= self.cfg.heartbeat_ttl / 4:
            info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "executions": self.executions,
                               "isolation": self.executor.isolation, "preload": self.executor.preload})
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.workers, self.wid)
            pipe.set(self.keys.heartbeat(self.wid), info, px=int(self.cfg.heartbeat_ttl * 1000))
            pipe.execute()
            self._last_beat = time.time()

    def _beat_quietly(self) -> None:
        try:
            self.heartbeat()
        except REDIS_ERRORS:
            pass  # the job goes on; the result push retries

    # -- the loop ----------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            iso = self.executor.start()
        except ExecutorError as exc:
            # A sandbox that cannot start (SANDBOX=strict without namespaces, an install it cannot keep
            # visible) will not start on a retry either: tell the manager to stop instead of respawning.
            log.error("%s", exc)
            self.executor.stop()
            raise SystemExit(EXIT_SANDBOX) from exc
        level = "warning" if iso["warnings"] else "info"
        getattr(log, level)("worker %s ready; isolation %s %s", self.wid, iso["level"], iso["warnings"] or "")
        self._retry(lambda: self.heartbeat(force=True), "register")
        while not self.stopping:
            raw = self._retry(self._next_item, "wait for work")
            if raw:
                self.handle(raw)
        self.executor.stop()

    def _next_item(self) -> Optional[str]:
        """Block up to 1 s for work, moving it atomically into this worker's processing list."""
        self.heartbeat()
        return self.redis.blmove(self.keys.queue, self.processing, 1.0, "RIGHT", "LEFT")

    def handle(self, raw: str) -> None:
        try:
            item = json.loads(raw)
            if not (isinstance(item, dict) and isinstance(item.get("sub"), dict) and {"reply", "i", "ttl"} <= set(item)):
                raise ValueError("missing fields")
        except ValueError as exc:
            # Not ours (someone else pushed to the queue): drop it, or every worker would crash on it.
            log.error("dropping a malformed work item (%s): %.200r", exc, raw)
            self._retry(lambda: self._finish(raw, None, {"malformed": 1}), "drop malformed item")
            return
        sub = item["sub"]
        if item.get("start_by") is not None and time.time() > item["start_by"]:
            # The API has answered queue_timeout already; running it would only waste a slot.
            self._retry(lambda: self._finish(raw, None, {"dropped": 1}), "drop stale job")
            return
        if item.get("start_by") is not None:  # only non-long items have a start deadline to tell the API about
            self._retry(lambda: self.redis.rpush(item["reply"], started_message(item["i"])), "ack start",
                        give_up_at=time.time() + 5)
        result = self.execute(sub)
        if self.cfg.error_case_save_path and not result["success"]:
            save_error_case(self.cfg.error_case_save_path, sub, result)
        self.executions += 1
        counters = {"executions": 1, "success" if result["success"] else "failure": 1}
        if result["reason"]:
            counters[f"reason:{result['reason']}"] = 1
        self._retry(lambda: self._finish(raw, item, counters, result), "push result",
                    give_up_at=time.time() + item["ttl"])

    def execute(self, sub: dict) -> dict:
        if sub.get("type") not in SUPPORTED_TYPES:  # the API checks this too; items may come from elsewhere
            return error_result(sub.get("sub_id"), Reason.INVALID_INPUT, f"unsupported type {sub.get('type')!r}")
        job = {k: sub.get(k) for k in ("type", "solution", "input", "expected_output")}
        try:
            return build_result(sub, self.executor.run(job, tick=self._beat_quietly))
        except ExecutorError as exc:
            log.error("sandbox failure: %s", exc)
            return error_result(sub.get("sub_id"), Reason.INTERNAL_ERROR, f"sandbox failure: {exc}")

    def _finish(self, raw: str, item: Optional[dict], counters: dict, result: Optional[dict] = None) -> None:
        pipe = self.redis.pipeline(transaction=True)
        if item is not None:
            pipe.rpush(item["reply"], result_message(item["i"], result))
            pipe.expire(item["reply"], item["ttl"])
            pipe.lpush(self.keys.latency, result["cost"])
            pipe.ltrim(self.keys.latency, 0, LATENCY_SAMPLES - 1)
        pipe.lrem(self.processing, 1, raw)
        for name, n in counters.items():
            pipe.hincrby(self.keys.stats, name, n)
        pipe.execute()

    def request_stop(self, *_) -> None:
        self.stopping = True


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="one code-judge worker (normally started by `judge workers`)")
    ap.add_argument("--slot", type=int, default=0)
    ap.add_argument("--worker-id", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s worker[{args.slot}] %(levelname)s %(message)s")
    worker = Worker(JudgeConfig.from_env(), args.slot, args.worker_id)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the manager stops us with SIGTERM
    worker.serve()


if __name__ == "__main__":
    main()
