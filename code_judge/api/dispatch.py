"""API side of the queue: enqueue a request's submissions, then wait for their replies without polling.

Deadlines per item (the public code-judge's semantics, answered faster where it can be):
- non-long (`/run`, `/run/batch`): an item not *started* within MAX_QUEUE_WORK_LIFE_TIME gets
  `queue_timeout` at that moment, so an overloaded service answers quickly and clients back off; a started
  item is waited for up to MAX_QUEUE_WAIT_TIME (+ one heartbeat, to allow a retry after a worker death);
- long (`/run/long-batch`): up to LONG_BATCH_MAX_QUEUE_WAIT_TIME in all.

If Redis goes away while a request waits, the request reconnects; if Redis came back empty (a restart: its
run_id changed), the items not yet started are enqueued again. Duplicate replies are ignored.

The reply list is never deleted: once drained it no longer exists in Redis, and each result push sets an
expiry on it, so replies that arrive after the request gave up do not stay behind either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Optional

import redis.asyncio as aioredis
from redis import exceptions as rexc

from code_judge.config import JudgeConfig
from code_judge.models import SUPPORTED_TYPES, Reason, Submission, error_result
from code_judge.queue import Keys, make_item, redis_options

log = logging.getLogger("code_judge.api")
REDIS_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError)


class RedisUnavailable(RuntimeError):
    pass


def validate(sub: Submission, cfg: JudgeConfig) -> Optional[str]:
    """Why this submission cannot be run, or None."""
    if sub.type not in SUPPORTED_TYPES:
        return f"unsupported submission type {sub.type!r}; supported: {', '.join(SUPPORTED_TYPES)}"
    size = len(sub.solution.encode("utf-8", "surrogatepass")) + len((sub.input or "").encode("utf-8", "surrogatepass"))
    if size > cfg.max_code_length:
        return f"solution + input is {size} bytes; the limit is MAX_CODE_LENGTH={cfg.max_code_length}"
    if "\x00" in sub.solution:
        return "solution contains a NUL byte"
    return None


class Dispatcher:
    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        self.keys = Keys(cfg)
        self.redis = aioredis.Redis.from_url(cfg.require_redis(), **redis_options(cfg))
        self._run_id: Optional[str] = None

    async def close(self) -> None:
        await self.redis.aclose()

    async def run_id(self) -> str:
        info = await self.redis.info("server")
        return info["run_id"]

    async def _reconnect(self, until: float) -> bool:
        """Wait for Redis to answer again (up to `until`); True if it restarted (lost its data)."""
        delay = 0.1
        while time.time() < until:
            try:
                rid = await self.run_id()
                restarted = self._run_id is not None and rid != self._run_id
                self._run_id = rid
                return restarted
            except REDIS_ERRORS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise RedisUnavailable("Redis did not come back in time")

    async def _enqueue(self, items: list[dict], chunk: int) -> None:
        for start in range(0, len(items), max(1, chunk)):
            pipe = self.redis.pipeline(transaction=False)
            for item in items[start : start + chunk]:
                pipe.lpush(self.keys.queue, json.dumps(item))
            await pipe.execute()

    async def run(self, subs: list[Submission], long: bool) -> list[dict]:
        """Run submissions; returns SubmissionResult dicts in input order. Never raises for bad input."""
        results: list[Optional[dict]] = [None] * len(subs)
        reply = self.keys.new_reply()
        items = {}
        for i, sub in enumerate(subs):
            problem = validate(sub, self.cfg)
            if problem:
                results[i] = error_result(sub.sub_id, Reason.INVALID_INPUT, problem)
            else:
                items[i] = make_item(self.cfg, reply, i, sub.model_dump(), long)
        if items:
            await self._wait(reply, items, results, long)
        return results  # type: ignore[return-value]

    async def _wait(self, reply: str, items: dict[int, dict], results: list, long: bool) -> None:
        cfg = self.cfg
        chunk = cfg.max_long_batch_chunk_size if long else max(cfg.max_batch_chunk_size, 16)
        begin = time.time()
        hard_deadline = begin + (cfg.long_wait_time if long else cfg.max_queue_wait_time + cfg.heartbeat_ttl)
        pending, started = dict(items), set()
        note = ""
        try:
            try:
                if self._run_id is None:
                    self._run_id = await self.run_id()
                await self._enqueue(list(pending.values()), chunk)
            except REDIS_ERRORS:
                await self._reconnect(begin + (cfg.max_queue_work_life_time if not long else 60))
                await self._enqueue(list(pending.values()), chunk)
            while pending:
                now = time.time()
                for i in list(pending):
                    item = pending[i]
                    late_start = item["start_by"] is not None and i not in started and now > item["start_by"]
                    if late_start or now > hard_deadline:
                        results[i] = error_result(item["sub"].get("sub_id"), Reason.QUEUE_TIMEOUT, note)
                        del pending[i]
                if not pending:
                    break
                next_event = min([hard_deadline] + [it["start_by"] for i, it in pending.items()
                                                    if it["start_by"] is not None and i not in started])
                wait = max(0.01, min(next_event - now, 5.0))
                try:
                    popped = await self.redis.blpop([reply], timeout=wait)
                    if popped is None:
                        continue
                    batch = [popped[1]]
                    if len(pending) > 1:  # more may be waiting: take them in the same round trip
                        batch += await self.redis.lpop(reply, 1000) or []
                except REDIS_ERRORS as exc:
                    log.warning("Redis error while waiting (%s); reconnecting", exc)
                    note = f"Redis connection lost: {exc}"
                    if await self._reconnect(hard_deadline):
                        lost = [it for i, it in pending.items() if i not in started]
                        log.warning("Redis restarted: enqueueing %d item(s) again", len(lost))
                        await self._enqueue(lost, chunk)
                    continue
                for raw in batch:
                    msg = json.loads(raw)
                    i = msg["i"]
                    if i not in pending:
                        continue  # a duplicate (a retried job finished twice)
                    if "r" in msg:
                        results[i] = msg["r"]
                        del pending[i]
                    else:
                        started.add(i)
        except RedisUnavailable as exc:
            for i, item in pending.items():
                results[i] = error_result(item["sub"].get("sub_id"), Reason.QUEUE_TIMEOUT, f"code judge queue: {exc}")
