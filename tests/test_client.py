"""Tests of code_judge.client.CodeJudgeClient.

The unit tests drive the client against `httpx.MockTransport` handlers that play the service and
record what they saw (requests, batch sizes, requests in flight). The last test runs against a real
service, given by the `judge_url` fixture of tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from code_judge.client import ClientStats, CodeJudgeClient, CodeJudgeError
from code_judge.models import Reason, Submission

BASE = "http://judge.test"


def ok_result(sub: dict, **over) -> dict:
    """What the service would answer for one submission: stdout echoes its solution."""
    res = {
        "sub_id": sub.get("sub_id"),
        "success": True,
        "run_success": True,
        "cost": 0.01,
        "stdout": f"out:{sub['solution']}|in:{sub.get('input')}",
        "stderr": "",
        "reason": "",
    }
    res.update(over)
    return res


class FakeJudge:
    """A MockTransport handler that records every request and can be told how to answer.

    `decide(subs, n)` may return an httpx.Response (for the whole request) or a list of result
    dicts; by default every submission succeeds. `delay` is awaited inside the handler so that
    requests overlap; `in_flight`/`max_in_flight` count them.
    """

    def __init__(self, decide=None, delay: float = 0.0):
        self.decide = decide
        self.delay = delay
        self.requests: list[httpx.Request] = []
        self.batches: list[list[dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = subs = None
            if request.url.path == "/run/long-batch":
                assert request.method == "POST"
                body = json.loads(request.content)
                assert body["type"] == "batch"
                subs = body["submissions"]
                self.batches.append(subs)
                n = len(self.batches)
            if self.delay:
                await asyncio.sleep(self.delay() if callable(self.delay) else self.delay)
            if request.url.path == "/ping":
                return httpx.Response(200, json="pong")
            if request.url.path == "/status":
                return httpx.Response(200, json={"queue": 0, "workers": 3})
            assert subs is not None, request.url
            answer = self.decide(subs, n) if self.decide else None
            if isinstance(answer, httpx.Response):
                return answer
            results = answer if answer is not None else [ok_result(s) for s in subs]
            return httpx.Response(200, json={"sub_id": body.get("sub_id"), "results": results})
        finally:
            self.in_flight -= 1

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def make_client(judge: FakeJudge, **kw) -> CodeJudgeClient:
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("max_backoff_s", 0.01)
    return CodeJudgeClient(BASE, transport=httpx.MockTransport(judge), **kw)


# ---------------------------------------------------------------- micro-batching


async def test_concurrent_runs_are_micro_batched_by_size():
    judge = FakeJudge()
    async with make_client(judge, max_batch_size=4, batch_wait_s=0.05) as client:
        results = await asyncio.gather(*(client.run(f"c{i}", f"s{i}") for i in range(10)))
    assert judge.sizes == [4, 4, 2]
    assert [r.stdout for r in results] == [f"out:c{i}|in:s{i}" for i in range(10)]
    assert client.stats == ClientStats(requests=3, items=10, retried_items=0, errors=0)


async def test_calls_further_apart_than_the_window_go_separately():
    judge = FakeJudge()
    async with make_client(judge, batch_wait_s=0.001) as client:
        for i in range(3):
            await client.run(f"c{i}")
            await asyncio.sleep(0.01)
    assert judge.sizes == [1, 1, 1]


async def test_batch_window_collects_late_arrivals():
    judge = FakeJudge()
    async with make_client(judge, batch_wait_s=0.2) as client:

        async def late(i):
            await asyncio.sleep(0.02 * i)
            return await client.run(f"c{i}")

        results = await asyncio.gather(*(late(i) for i in range(4)))
    assert judge.sizes == [4]
    assert [r.stdout for r in results] == [f"out:c{i}|in:None" for i in range(4)]


async def test_request_body_matches_the_service_schema():
    judge = FakeJudge()
    async with make_client(judge) as client:
        res = await client.run("int main(){}", "1 2", type="cpp", expected_output="3\n")
    assert res.success and res.reason == Reason.NONE
    (sub,) = judge.batches[0]
    assert sub["type"] == "cpp" and sub["solution"] == "int main(){}"
    assert sub["input"] == "1 2" and sub["expected_output"] == "3\n" and sub["sub_id"]
    assert judge.requests[0].url == f"{BASE}/run/long-batch"


async def test_run_many_preserves_order_across_batches_finishing_out_of_order():
    delays = iter([0.05, 0.0, 0.03, 0.01, 0.02, 0.0, 0.04])
    judge = FakeJudge(delay=lambda: next(delays))
    subs = [Submission(type="python", solution=f"c{i}", input=str(i)) for i in range(50)]
    async with make_client(judge, max_batch_size=8, max_concurrency=8) as client:
        results = await client.run_many(subs)
    assert len(judge.batches) == 7
    assert [r.stdout for r in results] == [f"out:c{i}|in:{i}" for i in range(50)]
    assert [r.sub_id for r in results] == [s.sub_id for s in subs]


async def test_run_many_empty():
    judge = FakeJudge()
    async with make_client(judge) as client:
        assert await client.run_many([]) == []
    assert judge.requests == []


# ---------------------------------------------------------------- queue_timeout retries


async def test_queue_timeout_item_is_retried_with_backoff_then_succeeds():
    # "slow" is answered queue_timeout twice; "fast" succeeds at once
    def decide(subs, n):
        return [
            ok_result(s, success=False, run_success=False, reason="queue_timeout")
            if s["solution"] == "slow" and n <= 2
            else ok_result(s)
            for s in subs
        ]

    judge = FakeJudge(decide)
    backoff = 0.05
    async with make_client(judge, backoff_s=backoff, max_backoff_s=1.0, batch_wait_s=0.001) as client:
        t0 = time.monotonic()
        fast_done = []

        async def fast():
            r = await client.run("fast")
            fast_done.append(time.monotonic() - t0)
            return r

        slow, fast_res = await asyncio.gather(client.run("slow"), fast())
        elapsed = time.monotonic() - t0
    assert judge.sizes == [2, 1, 1]  # both, then slow alone twice
    assert slow.success and slow.reason == Reason.NONE and slow.stdout == "out:slow|in:None"
    assert fast_res.success
    assert client.stats.retried_items == 2 and client.stats.requests == 3
    # backoff 0.05 then 0.10 (each -10 % jitter at worst)
    assert elapsed >= 0.9 * (backoff + 2 * backoff)
    # the successful item was not held back by its neighbour's backoff
    assert fast_done[0] < backoff


async def test_queue_timeout_backoff_is_exponential_and_capped(monkeypatch):
    judge = FakeJudge(lambda subs, n: [ok_result(s, reason="queue_timeout") for s in subs])
    async with make_client(judge, max_retries=5, backoff_s=0.001, max_backoff_s=0.004) as client:
        delays = []
        orig = client._backoff

        def spy(attempt):
            d = orig(attempt)
            delays.append((attempt, d))
            return d

        monkeypatch.setattr(client, "_backoff", spy)
        await client.run("x")
    assert [a for a, _ in delays] == [0, 1, 2, 3, 4]
    for attempt, d in delays:
        base = min(0.001 * 2**attempt, 0.004)
        assert 0.9 * base <= d <= 1.1 * base


async def test_queue_timeout_after_all_retries_is_returned_as_is():
    judge = FakeJudge(lambda subs, n: [ok_result(s, success=False, reason="queue_timeout") for s in subs])
    async with make_client(judge, max_retries=2) as client:
        res = await client.run("x")
    assert res.reason == Reason.QUEUE_TIMEOUT and not res.success
    assert client.stats.requests == 3 and client.stats.retried_items == 2


@pytest.mark.parametrize("reason", ["worker_timeout", "internal_error", "invalid_input"])
async def test_other_reasons_are_final(reason):
    judge = FakeJudge(lambda subs, n: [ok_result(s, success=False, reason=reason) for s in subs])
    async with make_client(judge) as client:
        res = await client.run("x")
    assert res.reason == Reason(reason)
    assert client.stats.requests == 1 and client.stats.retried_items == 0


# ---------------------------------------------------------------- HTTP errors


async def test_5xx_is_retried_then_succeeds():
    judge = FakeJudge(lambda subs, n: httpx.Response(503, text="busy") if n <= 2 else None)
    async with make_client(judge) as client:
        results = await asyncio.gather(client.run("a"), client.run("b"))
    assert [r.stdout for r in results] == ["out:a|in:None", "out:b|in:None"]
    assert judge.sizes == [2, 2, 2]
    assert client.stats.requests == 3 and client.stats.errors == 2


async def test_5xx_forever_raises_after_max_retries_with_clear_message():
    judge = FakeJudge(lambda subs, n: httpx.Response(500, json={"detail": "redis down"}))
    async with make_client(judge, max_retries=3) as client:
        with pytest.raises(CodeJudgeError) as info:
            await client.run("x")
    msg = str(info.value)
    assert f"{BASE}/run/long-batch" in msg and "4 attempts" in msg and "HTTP 500: redis down" in msg
    assert len(judge.requests) == 4 and client.stats.errors == 4


async def test_connection_errors_are_retried_then_raise():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ConnectError("Connection refused", request=request)

    async with CodeJudgeClient(
        BASE, transport=httpx.MockTransport(handler), max_retries=2, backoff_s=0.001
    ) as client:
        with pytest.raises(CodeJudgeError, match=r"after 3 attempts; last error: ConnectError: Connection refused"):
            await client.run("x")
    assert len(calls) == 3


async def test_timeout_is_retried_then_succeeds():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        subs = json.loads(request.content)["submissions"]
        return httpx.Response(200, json={"results": [ok_result(s) for s in subs]})

    async with CodeJudgeClient(BASE, transport=httpx.MockTransport(handler), backoff_s=0.001) as client:
        res = await client.run("x")
    assert res.stdout == "out:x|in:None" and len(calls) == 2


async def test_connection_refused_against_a_closed_port():
    # a real socket: nothing listens on port 9 of localhost in the test environment
    async with CodeJudgeClient("http://127.0.0.1:9", max_retries=1, backoff_s=0.001) as client:
        with pytest.raises(CodeJudgeError, match=r"http://127.0.0.1:9/run/long-batch failed after 2 attempts"):
            await client.run("x")
        assert client.stats.requests == 2


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_4xx_raises_at_once_with_server_detail(status):
    judge = FakeJudge(lambda subs, n: httpx.Response(status, json={"detail": "field solution: required"}))
    async with make_client(judge) as client:
        with pytest.raises(CodeJudgeError, match=rf"HTTP {status}: field solution: required"):
            await client.run("x")
    assert len(judge.requests) == 1


async def test_single_item_413_raises_at_once():
    judge = FakeJudge(lambda subs, n: httpx.Response(413, text="Request Entity Too Large"))
    async with make_client(judge) as client:
        with pytest.raises(CodeJudgeError, match="HTTP 413: Request Entity Too Large"):
            await client.run("x" * 1000)
    assert len(judge.requests) == 1


async def test_413_for_a_batch_splits_it():
    judge = FakeJudge(lambda subs, n: httpx.Response(413, text="too big") if len(subs) > 2 else None)
    async with make_client(judge, batch_wait_s=0.05) as client:
        results = await asyncio.gather(*(client.run(f"c{i}") for i in range(5)))
    assert [r.stdout for r in results] == [f"out:c{i}|in:None" for i in range(5)]
    # 5 -> 413 -> 2 + 3; 3 -> 413 -> 1 + 2
    assert judge.sizes[0] == 5 and sorted(judge.sizes) == [1, 2, 2, 3, 5]
    assert client.stats.errors == 2


async def test_wrong_number_of_results_raises():
    judge = FakeJudge(lambda subs, n: [ok_result(subs[0])])
    async with make_client(judge, batch_wait_s=0.05) as client:
        outcomes = await asyncio.gather(client.run("a"), client.run("b"), return_exceptions=True)
    assert all(isinstance(o, CodeJudgeError) and "1 results for 2 submissions" in str(o) for o in outcomes)
    assert len(judge.requests) == 1


async def test_run_many_raises_the_first_error():
    judge = FakeJudge(lambda subs, n: httpx.Response(422, json={"detail": "bad"}))
    async with make_client(judge) as client:
        with pytest.raises(CodeJudgeError, match="HTTP 422: bad"):
            await client.run_many([Submission(type="python", solution="x")] * 3)


# ---------------------------------------------------------------- concurrency and cancellation


async def test_concurrency_bound_is_never_exceeded():
    judge = FakeJudge(delay=0.02)
    async with make_client(judge, max_batch_size=1, max_concurrency=3) as client:
        results = await asyncio.gather(*(client.run(f"c{i}") for i in range(20)))
    assert len(judge.requests) == 20
    assert judge.max_in_flight == 3  # reached, never exceeded
    assert [r.stdout for r in results] == [f"out:c{i}|in:None" for i in range(20)]


async def test_backlog_while_slots_are_busy_makes_fuller_batches():
    judge = FakeJudge(delay=0.05)
    async with make_client(judge, max_batch_size=16, max_concurrency=1, batch_wait_s=0.001) as client:
        first = asyncio.ensure_future(client.run("first"))
        await asyncio.sleep(0.01)  # first request is in flight, holding the only slot
        rest = await asyncio.gather(*(client.run(f"c{i}") for i in range(10)))
        await first
    assert judge.max_in_flight == 1
    assert judge.sizes == [1, 10]
    assert len(rest) == 10


async def test_cancelled_caller_does_not_break_others():
    judge = FakeJudge(delay=0.05)
    async with make_client(judge, batch_wait_s=0.01) as client:
        a = asyncio.ensure_future(client.run("a"))
        b = asyncio.ensure_future(client.run("b"))
        c = asyncio.ensure_future(client.run("c"))
        await asyncio.sleep(0.03)  # the batch of three is in flight now
        assert judge.sizes == [3]
        b.cancel()
        ra, rc = await asyncio.gather(a, c)
        assert b.cancelled()
        assert (ra.stdout, rc.stdout) == ("out:a|in:None", "out:c|in:None")
        # the batcher still works afterwards
        assert (await client.run("d")).stdout == "out:d|in:None"
    assert judge.sizes == [3, 1]


async def test_caller_cancelled_before_sending_is_not_sent():
    judge = FakeJudge()
    async with make_client(judge, batch_wait_s=0.05) as client:
        a = asyncio.ensure_future(client.run("a"))
        b = asyncio.ensure_future(client.run("b"))
        await asyncio.sleep(0.01)  # both queued, window still open
        a.cancel()
        rb = await b
    assert rb.stdout == "out:b|in:None"
    assert [s["solution"] for s in judge.batches[0]] == ["b"]


async def test_cancel_during_queue_timeout_backoff():
    judge = FakeJudge(lambda subs, n: [ok_result(s, reason="queue_timeout") for s in subs])
    async with make_client(judge, backoff_s=0.05, max_backoff_s=0.05) as client:
        t = asyncio.ensure_future(client.run("x"))
        await asyncio.sleep(0.02)  # answered queue_timeout, waiting for its retry
        t.cancel()
        await asyncio.sleep(0.1)
        assert len(judge.requests) == 1  # not resubmitted after cancellation


# ---------------------------------------------------------------- lifecycle, ping, status


async def test_batcher_starts_lazily_and_close_cancels_it():
    judge = FakeJudge()
    client = make_client(judge)
    assert client._batcher is None
    await client.run("x")
    batcher = client._batcher
    assert batcher is not None and not batcher.done()
    await client.aclose()
    assert batcher.cancelled()
    await client.aclose()  # idempotent
    with pytest.raises(CodeJudgeError, match="closed"):
        await client.run("y")


async def test_close_fails_pending_calls():
    judge = FakeJudge(delay=10)
    client = make_client(judge)
    t = asyncio.ensure_future(client.run("x"))
    await asyncio.sleep(0.02)
    await client.aclose()
    with pytest.raises(CodeJudgeError, match="client closed"):
        await t


async def test_ping_and_status():
    judge = FakeJudge()
    async with make_client(judge) as client:
        assert await client.ping() is True
        assert await client.status() == {"queue": 0, "workers": 3}
    assert client.stats.requests == 0


async def test_ping_false_when_down_and_status_raises():
    def handler(request):
        raise httpx.ConnectError("Connection refused", request=request)

    async with CodeJudgeClient(BASE, transport=httpx.MockTransport(handler)) as client:
        assert await client.ping() is False
        with pytest.raises(CodeJudgeError, match=f"GET {BASE}/status failed"):
            await client.status()


def test_constructor_validates_arguments():
    with pytest.raises(ValueError):
        CodeJudgeClient(max_batch_size=0)
    with pytest.raises(ValueError):
        CodeJudgeClient(max_concurrency=0)


# ---------------------------------------------------------------- against the real service


async def test_client_against_real_service(judge_url):
    async with CodeJudgeClient(judge_url) as client:
        assert await client.ping()
        results = await asyncio.gather(*(client.run("print(6*7)") for _ in range(20)))
        assert [r.stdout for r in results] == ["42\n"] * 20
        assert all(r.run_success and r.reason == Reason.NONE for r in results)
        assert client.stats.requests < 20
