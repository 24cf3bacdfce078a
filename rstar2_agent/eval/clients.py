"""Generation for the eval: the agent loop's `generate(request_id, token_ids, params) -> Generation`, from a
served model (`CompletionsClient`) or a model folder loaded in this process (`local_generator`).

`CompletionsClient` speaks `/v1/completions` of any OpenAI-compatible server (vLLM, SGLang, our
`rstar2_agent.eval.server`), through the math search's client (`rstar2_agent.math.openai_backend.
OpenAICompletionsGenerator`: its httpx settings, retries with backoff on transport errors / 408 / 429 / 5xx, and
`BackendError`). Token in, token out where the server allows it:

* the prompt goes as token ids (`"prompt": [ids]`, which vLLM and SGLang take); a server that rejects that
  (a 4xx) is asked again with the decoded text, and every later request goes as text;
* the answer's ids are the choice's `token_ids` when the server returns them (vLLM with `return_token_ids`, our
  server), else its text encoded with the tokenizer (`token_ids_returned` counts which).

A conversation longer than the server's context is not an error of the server: vLLM and SGLang answer 400
naming their context length; the client learns it (`context_limit`), caps later turns' `max_tokens` to the room
left, and raises `ContextFull` when there is none, which ends that trajectory ("context_full") and not the run.

A turn stops at EOS or right after `</tool_call>` (the CPU engine's stop string; `include_stop_str_in_output`,
and the string is put back when a server drops it), so a tool call is run as soon as it is written.
"""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import Any, Mapping, Optional

import httpx

from rstar2_agent.engine.generator import STOP_STRINGS
from rstar2_agent.math.openai_backend import BackendError, OpenAICompletionsGenerator
from rstar2_agent.rollout import ContextFull, Generation

__all__ = ["CompletionsClient", "BackendError", "context_limit_in", "local_generator", "server_unreachable"]

# vLLM: "This model's maximum context length is 2048 tokens. ...", "... longer than the maximum model length of
# 2048", "max_tokens=4000 cannot be greater than max_model_len=2048"; SGLang: "... the model's context length
# (2048 tokens)", "... maximum context length of 2048 tokens"
_CONTEXT_LIMIT = re.compile(
    r"(?:maximum context length|maximum model length|context length|max_model_len)\D{0,12}?(\d+)", re.I)


def server_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.TransportError, BackendError))


def context_limit_in(message: str) -> Optional[int]:
    """The context length a server's refusal names, or None when it is about something else.

    >>> context_limit_in("HTTP 400: This model's maximum context length is 325 tokens. However, you requested 64")
    325
    >>> context_limit_in("HTTP 400: max_tokens=4000 cannot be greater than max_model_len=2048. Please request fewer")
    2048
    >>> context_limit_in("HTTP 400: this server takes text prompts only") is None
    True
    """
    if "HTTP 400" not in message and "HTTP 413" not in message:
        return None
    found = _CONTEXT_LIMIT.search(message)
    return int(found.group(1)) if found else None


class CompletionsClient:
    """An async `generate` for the agent loop against `base_url`'s `/v1/completions`."""

    def __init__(self, base_url: str, tokenizer, model: Optional[str] = None, max_concurrency: int = 32,
                 max_retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 600.0,
                 api_key: Optional[str] = None, stop: tuple[str, ...] = tuple(STOP_STRINGS), seed: Optional[int] = None):
        self.api = OpenAICompletionsGenerator(base_url, model=model, max_concurrency=max_concurrency,
                                              max_retries=max_retries, backoff_s=backoff_s, timeout_s=timeout_s,
                                              api_key=api_key)
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.seed = seed
        self.token_prompts: Optional[bool] = None  # None: not known yet; False after a server refused ids
        self.context_limit: Optional[int] = None  # the server's context length, once a refusal named it
        self.token_ids_returned = 0
        self.text_encoded = 0
        self.generated_tokens = 0
        self._http: Optional[httpx.AsyncClient] = None
        self._sem = asyncio.Semaphore(self.api.max_concurrency)

    @property
    def base_url(self) -> str:
        return self.api.base_url

    async def __aenter__(self) -> "CompletionsClient":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def start(self) -> str:
        """Open the connection pool and learn the model name (`/v1/models`) when none was given; the name."""
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.api.base_url, headers=self.api.headers,
                                           timeout=httpx.Timeout(self.api.timeout_s, connect=min(30.0, self.api.timeout_s)),
                                           limits=httpx.Limits(max_connections=self.api.max_concurrency))
        if self.api.model is None:
            try:
                self.api.model = await self.api._first_model(self._http)
            except httpx.HTTPError as exc:
                raise BackendError(f"{self.base_url}/v1/models: {type(exc).__name__}: {exc}") from exc
        return self.api.model

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def body(self, prompt, params: Mapping[str, Any]) -> dict:
        body = self.api.body("", 1, {**params, "stop": self.stop})
        body["prompt"] = prompt
        body.update(include_stop_str_in_output=True, no_stop_trim=True, return_token_ids=True)
        if self.seed is not None and "seed" not in body:
            body["seed"] = int(self.seed)
        return body

    async def _complete(self, token_ids: list[int], params: Mapping[str, Any]) -> dict:
        if self._http is None:
            await self.start()
        if self.token_prompts is not False:
            try:
                body = await self.api._post(self._http, self.body(list(token_ids), params))
                self.token_prompts = True
                return body
            except BackendError as exc:
                if self.token_prompts or "rejected" not in str(exc) or context_limit_in(str(exc)) is not None:
                    raise  # a server that took ids before, is down or found the prompt too long takes ids
                self.token_prompts = False
        text = self.tokenizer.decode(token_ids, skip_special_tokens=False)
        return await self.api._post(self._http, self.body(text, params))

    def fit(self, token_ids: list[int], params: Mapping[str, Any]) -> dict:
        """`params` with `max_tokens` capped to the room the known context leaves; `ContextFull` when none."""
        params = dict(params)
        if self.context_limit is not None:
            room = self.context_limit - len(token_ids)
            if room < 1:
                raise ContextFull(f"{len(token_ids)} tokens fill the served model's context of {self.context_limit}")
            params["max_tokens"] = min(int(params.get("max_tokens", room)), room)
        return params

    async def __call__(self, request_id: str, token_ids: list[int], sampling_params: Mapping[str, Any]) -> Generation:
        async with self._sem:
            try:
                body = await self._complete(token_ids, self.fit(token_ids, sampling_params))
            except BackendError as exc:
                limit = context_limit_in(str(exc))
                if limit is None:
                    raise
                if limit == self.context_limit:  # refused within the known limit: the server counts more tokens
                    raise ContextFull(str(exc)) from exc
                self.context_limit = limit  # learnt once; this turn is asked again within it
                body = await self._complete(token_ids, self.fit(token_ids, sampling_params))
        choices = body.get("choices") or []
        if not choices:
            raise BackendError(f"{self.base_url}/v1/completions answered without choices: {str(body)[:300]}")
        choice = choices[0]
        ids = choice.get("token_ids")
        if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
            self.token_ids_returned += 1
            ids = list(ids)
        else:
            text = str(choice.get("text") or "")
            stop = choice.get("stop_reason") or choice.get("matched_stop")
            if choice.get("finish_reason") == "stop" and isinstance(stop, str) and not text.endswith(stop):
                text += stop  # a server that trims the stop string
            self.text_encoded += 1
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            eos = self.tokenizer.eos_token_id
            if choice.get("finish_reason") == "stop" and stop is None and eos is not None and ids[-1:] != [eos]:
                ids.append(eos)  # stopped at EOS, which the text does not show
        self.generated_tokens += len(ids)
        return Generation(token_ids=ids)


def local_generator(model_dir: str, max_num_seqs: int, max_model_len: int, seed: int = 0, backend: str = "auto",
                    echo=print):
    """(generator, tokenizer, model) for a model folder in this process: the CPU engine's choice
    (`rstar2_agent.engine.backend.build_generator`: vLLM's CPU build where it imports and takes the model, else
    the transformers `BatchingGenerator`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rstar2_agent.engine import backend as engine_backend

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cfg = SimpleNamespace(
        actor_rollout_ref=SimpleNamespace(rollout=SimpleNamespace(
            name=backend, max_num_seqs=max_num_seqs, multi_turn=SimpleNamespace(max_tool_response_length=0))),
        data=SimpleNamespace(max_prompt_length=max_model_len, max_response_length=0),
        trainer=SimpleNamespace(seed=seed))
    return engine_backend.build_generator(cfg, model, tokenizer, model_dir, echo), tokenizer, model
