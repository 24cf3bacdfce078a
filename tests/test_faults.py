"""Faults: a worker killed mid-job, Redis restarting, an overloaded queue, a job whose workers keep dying.

Each test starts its own Redis and service, since it breaks them on purpose.
"""

import json
import os
import signal
import threading
import time

import httpx
import pytest
import redis

from code_judge.config import JudgeConfig
from code_judge.local import LocalJudge, RedisServer
from code_judge.queue import REAP_SCRIPT, Keys, make_item

KEYS = Keys(JudgeConfig())


@pytest.fixture()
def own_redis():
    server = RedisServer().start()
    yield server
    server.close()


def start_judge(redis_server, workers=2, **env):
    env = {"MAX_EXECUTION_TIME": "5", "WORKER_HEARTBEAT_TTL": "3", **{k: str(v) for k, v in env.items()}}
    return LocalJudge(workers=workers, redis_uri=redis_server.uri, env=env).start()


def post_in_thread(url, path, body) -> tuple[threading.Thread, dict]:
    out = {}

    def target():
        try:
            out["resp"] = httpx.post(url + path, json=body, timeout=120)
        except Exception as exc:  # noqa: BLE001 - surfaced by the test's assertion
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def busy_worker_pid(client: redis.Redis):
    for wid in client.smembers(KEYS.workers):
        beat = client.get(KEYS.heartbeat(wid))
        if beat and client.llen(KEYS.processing(wid)):
            return json.loads(beat)["pid"]
    return None


def one_job(code):
    return {"type": "batch", "submissions": [{"type": "python", "solution": code}]}


def test_worker_killed_mid_job_is_retried_and_replaced(own_redis):
    judge = start_judge(own_redis)
    client = redis.Redis(port=own_redis.port, decode_responses=True)
    try:
        code = "import time\ntime.sleep(1.5)\nprint('survived')"
        thread, out = post_in_thread(judge.url, "/run/long-batch", one_job(code))
        pid = wait_for(lambda: busy_worker_pid(client), what="a busy worker")
        os.kill(pid, signal.SIGKILL)
        thread.join(60)
        (result,) = out["resp"].json()["results"]
        assert result["run_success"] is True and result["stdout"] == "survived\n"
        assert int(client.hget(KEYS.stats, "retried")) == 1
        status = judge.wait_ready(timeout=60)  # the dead worker was replaced
        assert status["workers"]["alive"] == 2
    finally:
        client.close()
        judge.stop()


def test_job_whose_workers_keep_dying_gets_internal_error(own_redis):
    """The reaper, on a real Redis: a first death requeues at the head, the last one answers."""
    cfg = JudgeConfig()
    client = redis.Redis(port=own_redis.port, decode_responses=True)
    reply = KEYS.new_reply()
    first = make_item(cfg, reply, 0, {"sub_id": "a", "type": "python", "solution": "print(1)"}, long=False)
    second = dict(make_item(cfg, reply, 1, {"sub_id": "b", "type": "python", "solution": "print(2)"}, long=True),
                  attempt=cfg.max_job_attempts - 1)
    client.lpush(KEYS.queue, "older-item")
    for wid, item in (("dead-1", first), ("dead-2", second)):
        client.sadd(KEYS.workers, wid)
        client.lpush(KEYS.processing(wid), json.dumps(item))
    client.set(KEYS.heartbeat("alive"), "{}")
    client.sadd(KEYS.workers, "alive")
    script = client.register_script(REAP_SCRIPT)
    requeued, failed = script(keys=[KEYS.queue, KEYS.workers, KEYS.stats], args=[KEYS.prefix, cfg.max_job_attempts])
    assert (requeued, failed) == (1, 1)
    head = json.loads(client.lindex(KEYS.queue, -1))  # workers pop from the right: it runs next
    assert head["id"] == first["id"] and head["attempt"] == 1 and head["start_by"] is None
    msg = json.loads(client.lpop(reply))
    assert msg["i"] == 1 and msg["r"]["reason"] == "internal_error" and msg["r"]["sub_id"] == "b"
    assert client.smembers(KEYS.workers) == {"alive"}
    client.close()


def test_redis_restart_is_survived(own_redis):
    judge = start_judge(own_redis)
    try:
        # One job running while Redis goes away, one submitted while it is away.
        running, out1 = post_in_thread(judge.url, "/run/long-batch", one_job("import time\ntime.sleep(1.5)\nprint('A')"))
        client = redis.Redis(port=own_redis.port, decode_responses=True)
        wait_for(lambda: busy_worker_pid(client), what="a busy worker")
        client.close()
        own_redis.stop()
        queued, out2 = post_in_thread(judge.url, "/run/long-batch", one_job("print('B')"))
        time.sleep(1.0)
        own_redis.start()
        running.join(90)
        queued.join(90)
        assert out1["resp"].json()["results"][0]["stdout"] == "A\n"
        assert out2["resp"].json()["results"][0]["stdout"] == "B\n"
        judge.wait_ready(timeout=60)  # workers re-registered in the new Redis
        r = httpx.post(judge.url + "/run", json={"type": "python", "solution": "print('C')"}, timeout=60).json()
        assert r["stdout"] == "C\n"
    finally:
        judge.stop()


def test_overloaded_queue_answers_queue_timeout_quickly(own_redis):
    judge = start_judge(own_redis, workers=1, MAX_QUEUE_WORK_LIFE_TIME=1)
    try:
        body = {"type": "batch", "submissions": [
            {"type": "python", "solution": "import time; time.sleep(0.8); print('ran')"} for _ in range(5)]}
        results = httpx.post(judge.url + "/run/batch", json=body, timeout=120).json()["results"]
        assert results[0]["stdout"] == "ran\n"
        # one worker, 0.8 s each: the last items cannot start within 1 s of enqueueing
        assert [r["reason"] for r in results[-2:]] == ["queue_timeout", "queue_timeout"]
        client = redis.Redis(port=own_redis.port, decode_responses=True)
        # the worker skips the stale items instead of running them after the API gave up
        wait_for(lambda: int(client.hget(KEYS.stats, "dropped") or 0) >= 2, what="stale items dropped")
        assert int(client.hget(KEYS.stats, "executions")) <= 3
        client.close()
    finally:
        judge.stop()


def test_api_answers_when_redis_is_down(own_redis):
    judge = start_judge(own_redis, workers=1, MAX_QUEUE_WORK_LIFE_TIME=1)
    try:
        own_redis.stop()
        r = httpx.post(judge.url + "/run", json={"type": "python", "solution": "print(1)"}, timeout=60)
        assert r.status_code == 200 and r.json()["reason"] == "queue_timeout"
        assert httpx.get(judge.url + "/status", timeout=30).status_code == 503
    finally:
        own_redis.start()
        judge.stop()


def test_malformed_queue_item_is_dropped_not_fatal(own_redis):
    judge = start_judge(own_redis, workers=1)
    client = redis.Redis(port=own_redis.port, decode_responses=True)
    try:
        client.lpush(KEYS.queue, "this is not json", json.dumps({"no": "fields"}))
        r = httpx.post(judge.url + "/run", json={"type": "python", "solution": "print('fine')"}, timeout=60).json()
        assert r["stdout"] == "fine\n"
        assert int(client.hget(KEYS.stats, "malformed")) == 2
        assert judge.wait_ready()["workers"]["alive"] == 1
    finally:
        client.close()
        judge.stop()
