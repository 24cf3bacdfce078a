"""The OpenAI-compatible completions backend against an in-test HTTP handler (httpx.MockTransport):
request fields, stop reporting, order, bounded concurrency, retries and errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rstar2_agent.math.openai_backend import BackendError, OpenAICompletionsGenerator, continuations_of
from rstar2_agent.math.steps import Continuation

PARAMS = {"temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_tokens": 32, "stop": ["<end_of_step>"], "seed": 3}


class Server:
    """Answers each prompt with n choices 'P:<prompt>#j', choice 0 stopped on the first stop string."""

    def __init__(self, fail_first: int = 0, status: int = 503):
        self.bodies, self.active, self.peak = [], 0, 0
        self.fail_first, self.status = fail_first, status

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "served-model"}]})
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.fail_first > 0:
            self.fail_first -= 1
            return httpx.Response(self.status, text="busy")
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        choices = [{"index": j, "text": f"P:{body['prompt']}#{j}", "finish_reason": "stop" if j == 0 else "length",
                    "stop_reason": body["stop"][0] if j == 0 else None} for j in reversed(range(body["n"]))]
        return httpx.Response(200, json={"choices": choices, "usage": {"completion_tokens": 5 * body["n"] + 1}})


def make(server: Server, **kw) -> OpenAICompletionsGenerator:
    return OpenAICompletionsGenerator("http://srv", transport=httpx.MockTransport(server.handler), backoff_s=0, **kw)


def test_request_fields_order_and_stop_reasons():
    server = Server()
    gen = make(server, max_concurrency=2)
    prompts = [f"q{i}" for i in range(5)]
    out = gen.generate(prompts, 3, PARAMS)
    assert [c.text for c in out[3]] == ["P:q3#0", "P:q3#1", "P:q3#2"]  # choices back in index order
    assert out[3][0].stop_reason == "<end_of_step>" and out[3][1].stop_reason is None
    assert sum(c.num_tokens for c in out[0]) == 16
    body = server.bodies[0]
    assert body["model"] == "served-model"  # taken from /v1/models
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["stop"], body["seed"]) == \
        (3, 0.7, 0.9, 32, ["<end_of_step>"], 3)
    assert body["top_k"] == -1 and body["skip_special_tokens"] is False
    assert server.peak <= 2 and len(server.bodies) == 5 and gen.calls == 1


def test_retries_then_success_and_errors():
    server = Server(fail_first=2)
    gen = make(server, model="m", max_retries=3)
    assert gen.generate(["a"], 1, PARAMS)[0][0].text == "P:a#0" and gen.requests == 3
    with pytest.raises(BackendError, match="after 2 attempts"):
        make(Server(fail_first=9), model="m", max_retries=1).generate(["a"], 1, PARAMS)
    bad = Server(fail_first=1, status=400)
    with pytest.raises(BackendError, match="rejected"):
        make(bad, model="m", max_retries=5).generate(["a"], 1, PARAMS)
    assert len(bad.bodies) == 1  # a 400 is not retried


def test_sglang_matched_stop():
    body = {"choices": [{"index": 0, "text": "x", "finish_reason": "stop", "matched_stop": "<end_of_code>"}]}
    assert continuations_of(body) == [Continuation("x", "<end_of_code>", 0)]
