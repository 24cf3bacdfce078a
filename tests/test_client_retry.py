"""The client's request retries (tenacity): backoff shape, and the request slot given back in every case."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import httpx
import pytest

from code_judge.client import CodeJudgeClient, CodeJudgeError

BASE = "http://judge.test"


def answer(request: httpx.Request) -> httpx.Response:
    subs = json.loads(request.content)["submissions"]
    return httpx.Response(200, json={"results": [{"success": True, "run_success": True, "stdout": s["solution"]}
                                                 for s in subs]})


async def test_failed_requests_back_off_exponentially_capped_with_a_little_jitter(caplog):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503, text="busy") if len(calls) <= 5 else answer(request)

    caplog.set_level(logging.WARNING, logger="code_judge.client")
    async with CodeJudgeClient(BASE, transport=httpx.MockTransport(handler), max_retries=5, backoff_s=0.01,
                               max_backoff_s=0.04) as client:
        assert (await client.run("x")).stdout == "x"
    delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+)s", caplog.text)]
    attempts = [int(a) for a in re.findall(r"\(attempt (\d+) of 6\)", caplog.text)]
    assert attempts == [1, 2, 3, 4, 5] and len(calls) == 6
    for n, delay in enumerate(delays):
        base = min(0.01 * 2**n, 0.04)
        assert base - 1e-3 <= delay <= base + 0.001 + 1e-3  # jitter: at most 10 % of backoff_s
    assert client.stats.errors == 5 and client.stats.requests == 6


async def test_a_retry_whose_callers_all_left_is_not_sent_and_the_slot_is_free():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503, text="busy") if len(calls) == 1 else answer(request)

    async with CodeJudgeClient(BASE, transport=httpx.MockTransport(handler), max_concurrency=1, max_retries=3,
                               backoff_s=0.2, max_backoff_s=0.2) as client:
        first = asyncio.ensure_future(client.run("gone"))
        await asyncio.sleep(0.05)  # answered 503, backing off
        first.cancel()
        await asyncio.sleep(0.3)  # the retry finds no caller left
        assert len(calls) == 1
        assert (await asyncio.wait_for(client.run("next"), 5)).stdout == "next"  # the slot was given back


async def test_an_unsupported_url_scheme_is_not_retried():
    async with CodeJudgeClient("ftp://judge.test", max_retries=3, backoff_s=0.001) as client:
        with pytest.raises(CodeJudgeError, match="UnsupportedProtocol"):
            await client.run("x")
        assert client.stats.requests == 1
