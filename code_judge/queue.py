"""The Redis protocol between the API and the workers: key names, work items, replies, and the reaper.

Keys (prefix `P` = `{REDIS_KEY_PREFIX}:rstar2cj`):

    P:queue              list  work items; the API LPUSHes, a worker BLMOVEs the right end into ...
    P:processing:<wid>   list  ... its own processing list, so a job survives the worker's death
    P:workers            set   worker ids ever registered and not yet reaped
    P:hb:<wid>           str   heartbeat JSON (host, pid, busy, isolation), expires after WORKER_HEARTBEAT_TTL
    P:reply:<uuid>       list  one per HTTP request: {"i": index, "s": 1} when an item starts,
                               {"i": index, "r": result} when it is done; the API BLPOPs it (no polling)
    P:stats              hash  counters: executions, success, failure, reason:<reason>, dropped, retried
    P:latency            list  the last 1000 execution costs (s), for p50/p99

Everything stored is ASCII JSON (lone surrogates a client sent survive as escapes). A work item is JSON: {"id", "reply", "i", "sub": {submission}, "long": bool, "enq": t, "start_by": t|null,
"attempt": n, "ttl": s}. Non-long items not started by `start_by` are dropped by the worker (the API has
already answered `queue_timeout`). When a worker dies, `REAP_SCRIPT` moves its processing list back to the
head of the queue with `attempt + 1`, or answers `internal_error` once `MAX_JOB_ATTEMPTS` is reached.
"""

from __future__ import annotations

import json
import time
import uuid

from code_judge.config import JudgeConfig

LATENCY_SAMPLES = 1000


def redis_options(cfg: JudgeConfig) -> dict:
    """Connection settings shared by the API (redis.asyncio) and the workers (redis): `Redis.from_url(
    cfg.require_redis(), **redis_options(cfg))`. Keepalive and health checks notice a dead or restarted
    server; replies are text, with any lone surrogate a client sent kept intact."""
    return dict(socket_timeout=cfg.redis_socket_timeout, socket_connect_timeout=10, socket_keepalive=True,
                health_check_interval=30, decode_responses=True, encoding_errors="surrogatepass")


class Keys:
    def __init__(self, cfg: JudgeConfig):
        p = cfg.prefix
        self.prefix = p
        self.queue = f"{p}:queue"
        self.workers = f"{p}:workers"
        self.stats = f"{p}:stats"
        self.latency = f"{p}:latency"

    def processing(self, wid: str) -> str:
        return f"{self.prefix}:processing:{wid}"

    def heartbeat(self, wid: str) -> str:
        return f"{self.prefix}:hb:{wid}"

    def new_reply(self) -> str:
        return f"{self.prefix}:reply:{uuid.uuid4().hex}"


def make_item(cfg: JudgeConfig, reply: str, index: int, sub: dict, long: bool) -> dict:
    now = time.time()
    return {
        "id": uuid.uuid4().hex,
        "reply": reply,
        "i": index,
        "sub": sub,
        "long": long,
        "enq": now,
        "start_by": None if long else now + cfg.max_queue_work_life_time,
        "attempt": 0,
        "ttl": int(cfg.long_wait_time if long else cfg.redis_result_expire),
    }


def started_message(index: int) -> str:
    return json.dumps({"i": index, "s": 1})


def result_message(index: int, result: dict) -> str:
    return json.dumps({"i": index, "r": result})


# KEYS: queue, workers set, stats hash. ARGV: prefix, max_attempts, then worker ids to reap even if their heartbeat lives
# (a local manager saw the process die). Returns the number of jobs requeued and answered.
REAP_SCRIPT = """
local prefix, max_attempts = ARGV[1], tonumber(ARGV[2])
local forced = {}
for i = 3, #ARGV do forced[ARGV[i]] = true end
local requeued, failed = 0, 0
for _, wid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if forced[wid] or redis.call('EXISTS', prefix .. ':hb:' .. wid) == 0 then
    local plist = prefix .. ':processing:' .. wid
    while true do
      local raw = redis.call('RPOP', plist)
      if not raw then break end
      local item = cjson.decode(raw)
      item.attempt = (item.attempt or 0) + 1
      if item.attempt >= max_attempts then
        local sub_id = item.sub.sub_id
        local result = {sub_id = sub_id, success = false, run_success = false, cost = 0, stdout = '',
          stderr = 'the worker running this submission died ' .. item.attempt .. ' time(s); not retried again',
          reason = 'internal_error'}
        redis.call('RPUSH', item.reply, cjson.encode({i = item.i, r = result}))
        redis.call('EXPIRE', item.reply, item.ttl)
        failed = failed + 1
      else
        item.start_by = cjson.null
        redis.call('RPUSH', KEYS[1], cjson.encode(item))
        requeued = requeued + 1
      end
    end
    redis.call('DEL', prefix .. ':hb:' .. wid)
    redis.call('SREM', KEYS[2], wid)
  end
end
if requeued > 0 then redis.call('HINCRBY', KEYS[3], 'retried', requeued) end
if failed > 0 then redis.call('HINCRBY', KEYS[3], 'reason:internal_error', failed) end
return {requeued, failed}
"""
