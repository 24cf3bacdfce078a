"""Generation through any OpenAI-compatible completions server (``vllm serve``, SGLang): ``/v1/completions``.

One request per prompt carries ``n``, ``temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``stop`` and
``seed``; the round's requests run concurrently, at most ``max_concurrency`` at a time (the server batches
them; siblings share their whole prompt, which its prefix cache serves once). A request that fails with a
transport error, 408, 429 or 5xx is retried with exponential backoff up to ``max_retries`` times; any other
answer raises at once with the server's detail.

A choice that ended on a stop string reports it as vLLM does (``stop_reason``; SGLang: ``matched_stop``), and
becomes ``Continuation(text, stop, tokens)``; the token count is the request's ``usage.completion_tokens``
shared over its choices (servers report no per-choice count).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Optional

import httpx

from rstar2_agent.math.steps import Continuation

__all__ = ["OpenAICompletionsGenerator", "continuations_of", "BackendError"]

_RETRYABLE = frozenset({408, 429})


class BackendError(RuntimeError):
    """The server could not give a completion (after the retries, or a request it rejects)."""


def _stop_of(choice: dict) -> Optional[str]:
    if choice.get("finish_reason") != "stop":
        return None
    for key in ("stop_reason", "matched_stop"):
        value = choice.get(key)
        if isinstance(value, str):
            return value
    return None


def continuations_of(body: dict) -> list[Continuation]:
    """The continuations of one completions response, in choice order."""
    choices = sorted(body.get("choices", []), key=lambda c: c.get("index", 0))
    total = int((body.get("usage") or {}).get("completion_tokens") or 0)
    share, extra = divmod(total, len(choices)) if choices else (0, 0)
    return [Continuation(str(c.get("text", "")), _stop_of(c), share + (1 if i < extra else 0))
            for i, c in enumerate(choices)]


class OpenAICompletionsGenerator:
    """``generate(prompts, n, params)`` against ``base_url`` (e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, base_url: str, model: Optional[str] = None, max_concurrency: int = 16,
                 max_retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 600.0,
                 api_key: Optional[str] = None, transport: Optional[httpx.AsyncBaseTransport] = None):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_concurrency = max(1, max_concurrency)
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.transport = transport
        self.calls = 0
        self.requests = 0
        self.generated_tokens = 0

    def generate(self, prompts: list[str], n: int, params: dict[str, Any]) -> list[list[Continuation]]:
        self.calls += 1
        out = asyncio.run(self._generate(list(prompts), n, params))
        self.generated_tokens += sum(c.num_tokens for conts in out for c in conts)
        return out

    def body(self, prompt: str, n: int, params: dict[str, Any]) -> dict:
        """The JSON body of one prompt's request."""
        body = {"model": self.model, "prompt": prompt, "n": n,
                "temperature": float(params.get("temperature", 1.0)), "top_p": float(params.get("top_p", 1.0)),
                "max_tokens": int(params.get("max_tokens", 256)), "stop": list(params.get("stop") or []),
                "skip_special_tokens": False}
        if params.get("top_k") not in (None, 0):
            body["top_k"] = int(params["top_k"])
        if params.get("seed") is not None:
            body["seed"] = int(params["seed"])
        return body

    async def _generate(self, prompts: list[str], n: int, params: dict[str, Any]) -> list[list[Continuation]]:
        sem = asyncio.Semaphore(self.max_concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, transport=self.transport, headers=self.headers,
                                     timeout=httpx.Timeout(self.timeout_s, connect=30.0)) as http:
            if self.model is None:
                self.model = await self._first_model(http)

            async def one(prompt: str) -> list[Continuation]:
                async with sem:
                    return continuations_of(await self._post(http, self.body(prompt, n, params)))

            return list(await asyncio.gather(*(one(p) for p in prompts)))

    async def _first_model(self, http: httpx.AsyncClient) -> str:
        resp = await http.get("/v1/models")
        resp.raise_for_status()
        data = resp.json().get("data") or []
        if not data:
            raise BackendError(f"{self.base_url}/v1/models lists no model")
        return str(data[0]["id"])

    async def _post(self, http: httpx.AsyncClient, body: dict) -> dict:
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (1 + 0.1 * random.random()))
            self.requests += 1
            try:
                resp = await http.post("/v1/completions", json=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code == 200:
                return resp.json()
            last = f"HTTP {resp.status_code}: {resp.text[:500]}"
            if resp.status_code < 500 and resp.status_code not in _RETRYABLE:
                raise BackendError(f"{self.base_url}/v1/completions rejected the request: {last}")
        raise BackendError(f"{self.base_url}/v1/completions failed after {self.max_retries + 1} attempts: {last}")
