"""The CPU engine's rollout server: transformers generation behind the agent loop's `generate` interface.

The agent loop runs every trajectory as its own coroutine and calls `generate(request_id, token_ids, params)`
once per model turn, as it does against SGLang on the GPU path. On one CPU a single sequence is memory-bound
(SmolLM2-135M on 2 cores: ~15 tokens/s alone, ~75 tokens/s in a batch of 32), so `BatchingGenerator` gathers the calls
that are waiting and decodes them together, continuous-batching style: while one batch is decoding, new calls
queue up and go out together in the next one. A batch is its own decode loop on one KV cache, from which each
row leaves as soon as its turn is over, so a long turn does not make the finished ones decode along with it.

Between batches it waits briefly for stragglers (`gather_window_s`): the trajectories of the batch that just
finished run their tool calls on the code judge and queue their next turn a few hundred milliseconds apart, and
without the wait the first one back would go out alone, leaving the rest to queue for a whole decode. The wait
ends as soon as `max_num_seqs` requests are queued, or when none has arrived for `gather_window_s`.

    gen = BatchingGenerator(model, tokenizer, max_num_seqs=32)
    out = await gen("r1", prompt_ids, {"max_tokens": 64, "temperature": 1.0})   # Generation(token_ids=[...])

A turn ends at EOS (kept, like SGLang returns it), right after a `</tool_call>` (the stop string), or after
`max_tokens`. Temperature 0 is greedy. A turn cut at the stop string is returned with the EOS appended, as if
the model had written it: the agent loop then gives that EOS loss mask 1, as on the GPU path, where SGLang has no
stop string and the model itself must close its tool call with EOS, so it has to learn to. The other way to
match the GPU path, no stop string, would let a model that has not learned it yet write on after `</tool_call>`
until its EOS or the token limit, on every tool turn, which is slow on a CPU. The cost: that
EOS was not sampled, so its gradient is not an on-policy one (the cold start's demonstrations, which end each
tool call with EOS, make it the likely token anyway).

Sampling is per request: each row draws from its own `torch.Generator`, seeded from `(seed, request_id, length of
the turn's input)` with a stable hash (`request_seed`), never from torch's global stream. Which rows share a batch
depends on when the code judge answers, so with one shared stream a problem's draws would depend on its
neighbours; this way a request samples the same tokens alone or in any batch, a validation's `val-<i>-<k>`
requests get the same dice every time (before/after compare the policy), and each turn of a trajectory (a longer
input) gets fresh ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
from typing import Any, Mapping, Sequence

import torch

from rstar2_agent.rollout import Generation

STOP_STRINGS = ("</tool_call>",)


@dataclasses.dataclass
class _Request:
    token_ids: list[int]
    params: Mapping[str, Any]
    future: asyncio.Future
    request_id: str = ""


def request_seed(seed: int, request_id: str, input_length: int) -> int:
    """A 63-bit seed for one turn of one request, the same in every process (Python's `hash` of a str is salted).

    >>> request_seed(1, "val-0-0", 12) == request_seed(1, "val-0-0", 12) != request_seed(1, "val-0-1", 12)
    True
    """
    digest = hashlib.blake2b(f"{seed}\0{request_id}\0{input_length}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def sampling_key(params: Mapping[str, Any]) -> tuple:
    """Requests that can share one `generate` call (same sampling settings)."""
    return float(params.get("temperature", 1.0)), float(params.get("top_p", 1.0)), bool(params.get("ignore_eos"))


class BatchingGenerator:
    """An async `generate` for the agent loop that batches concurrent calls on one transformers model."""

    def __init__(self, model, tokenizer, max_num_seqs: int = 32, stop_strings: Sequence[str] = STOP_STRINGS,
                 gather_window_s: float = 0.25, max_gather_s: float = 2.0,
                 eos_token_ids: Sequence[int] | None = None, seed: int = 0):
        self.model = model
        self.seed = seed  # with each request's id, seeds its own sampler (`request_seed`); trainer.seed
        self.gather_window_s = gather_window_s
        self.max_gather_s = max_gather_s
        self.tokenizer = tokenizer
        self.max_num_seqs = max(1, max_num_seqs)
        self.stop_strings = list(stop_strings)
        # tokens to decode when looking for a stop string at the end of a row (a token is at least one char)
        self._stop_window = max((len(stop) for stop in self.stop_strings), default=0) + 1
        self.eos_id = tokenizer.eos_token_id
        # a turn ends at any of these (a model's generation config may list more than the tokenizer's EOS)
        self.eos_ids = set(eos_token_ids) if eos_token_ids else {self.eos_id}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pending: list[_Request] = []
        self._busy = False
        self._lock = threading.Lock()  # one generate at a time on the model
        self.generated_tokens = 0  # new tokens returned, for tokens/s

    async def __call__(self, request_id: str, token_ids: list[int], sampling_params: Mapping[str, Any]) -> Generation:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(token_ids), dict(sampling_params), future, str(request_id)))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(0)  # let the coroutines started together enqueue their first turn
            while self._pending:
                key = sampling_key(self._pending[0].params)
                batch = [r for r in self._pending if sampling_key(r.params) == key][: self.max_num_seqs]
                taken = {id(r) for r in batch}
                self._pending = [r for r in self._pending if id(r) not in taken]
                try:
                    outputs = await loop.run_in_executor(None, self.generate_batch,
                                                         [r.token_ids for r in batch], batch[0].params,
                                                         [int(r.params["max_tokens"]) for r in batch],
                                                         [r.request_id for r in batch])
                except Exception as exc:  # noqa: BLE001 - every waiting trajectory must hear about it
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    continue
                for r, ids in zip(batch, outputs):
                    if not r.future.done():
                        r.future.set_result(Generation(token_ids=self.close_turn(ids, int(r.params["max_tokens"]))))
                await self._gather(len(batch))
        finally:
            self._busy = False

    async def _gather(self, returned: int) -> None:
        """After a batch, wait for its trajectories to run their tools and queue their next turn (at most
        `returned` of them come back), until none has arrived for `gather_window_s` or `max_gather_s` is up."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        deadline = loop.time() + self.max_gather_s
        quiet_until = loop.time() + self.gather_window_s
        seen = len(self._pending)
        while len(self._pending) < returned and loop.time() < min(quiet_until, deadline):
            await asyncio.sleep(0.01)
            if len(self._pending) > seen:
                seen, quiet_until = len(self._pending), loop.time() + self.gather_window_s

    def generate_batch(self, prompts: Sequence[Sequence[int]], params: Mapping[str, Any],
                       max_tokens: Sequence[int], request_ids: Sequence[str] | None = None) -> list[list[int]]:
        """The new token ids of each prompt (see `decode`)."""
        return self.decode(prompts, params, max_tokens, request_ids=request_ids)[0]

    def samplers(self, prompts: Sequence[Sequence[int]], request_ids: Sequence[str]) -> list[torch.Generator]:
        """One generator per row, seeded from (`self.seed`, its request id, its input length)."""
        return [torch.Generator().manual_seed(request_seed(self.seed, rid, len(p)))
                for p, rid in zip(prompts, request_ids, strict=True)]

    def decode(self, prompts: Sequence[Sequence[int]], params: Mapping[str, Any], max_tokens: Sequence[int],
               logprobs: bool = False, request_ids: Sequence[str] | None = None
               ) -> tuple[list[list[int]], list[list[float]] | None]:
        """Decode the prompts together, one new token per row per step on a shared KV cache. A row that is
        done (EOS, the stop string, or its `max_tokens`) leaves the batch at once, so the rows still writing do
        not carry the finished ones: in a turn where most stop at `</tool_call>` after 40 tokens and one goes
        on to 200, the last 160 steps run at batch size 1, not 32 (HF `generate` would decode all 32).

        Sampling: `temperature` (0 = greedy), `top_p`, `top_k` (<= 0: off) from `params`; `ignore_eos` (as in
        vLLM) decodes on past an EOS, for fixed-length benchmarks. With `logprobs`, it
        also returns each new token's log-probability under softmax(logits / temperature) (logits / 1 when
        greedy), as verl's actor computes them; top-p/top-k do not enter them. With `request_ids`, each row samples
        from its own generator (`samplers`), so its tokens do not depend on the other rows; without, all rows draw
        from torch's global stream."""
        from transformers import DynamicCache

        temperature, top_p = float(params.get("temperature", 1.0)), float(params.get("top_p", 1.0))
        top_k = int(params.get("top_k", 0) or 0)
        eos_ids = set() if params.get("ignore_eos") else self.eos_ids
        input_ids, attention = left_pad(prompts, self.pad_id)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        rows: list[list[int]] = [[] for _ in prompts]
        row_logprobs: list[list[float]] = [[] for _ in prompts]
        active = list(range(len(prompts)))
        generators = self.samplers(prompts, request_ids) if request_ids is not None and temperature > 0 else None
        cache = DynamicCache()
        with self._lock, torch.no_grad():
            logits = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            next_position = positions[:, -1] + 1
            while True:
                tokens = sample_next(logits, temperature, top_p, top_k,
                                     None if generators is None else [generators[i] for i in active])
                if logprobs:
                    scaled = torch.log_softmax(logits.float() / (temperature if temperature > 0 else 1.0), -1)
                    for j, value in enumerate(scaled.gather(-1, tokens[:, None]).squeeze(-1).tolist()):
                        row_logprobs[active[j]].append(value)
                keep = [j for j, i in enumerate(active)
                        if not self._append(rows[i], int(tokens[j]), max_tokens[i], eos_ids)]
                if not keep:
                    break
                if len(keep) < len(active):  # finished rows leave the batch and the cache
                    index = torch.tensor(keep, dtype=torch.long)
                    cache.batch_select_indices(index)
                    tokens, attention, next_position = tokens[index], attention[index], next_position[index]
                    active = [active[j] for j in keep]
                attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=-1)
                logits = self.model(input_ids=tokens[:, None], attention_mask=attention,
                                    position_ids=next_position[:, None], past_key_values=cache,
                                    use_cache=True).logits[:, -1]
                next_position = next_position + 1
        self.generated_tokens += sum(len(r) for r in rows)
        return rows, (row_logprobs if logprobs else None)

    def _append(self, row: list[int], token: int, max_tokens: int, eos_ids: set[int]) -> bool:
        """Add a decoded token to its row; True when the row's turn is over."""
        row.append(token)
        return token in eos_ids or len(row) >= max_tokens or self._at_stop(row)

    def _at_stop(self, row: Sequence[int]) -> bool:
        if not self.stop_strings:
            return False
        tail = self.tokenizer.decode(row[-self._stop_window:])
        return any(tail.endswith(stop) for stop in self.stop_strings)

    def close_turn(self, ids: list[int], max_tokens: int) -> list[int]:
        """A turn's ids as the agent loop gets them: one cut at a stop string gets the EOS appended (see the
        module docstring), when the budget has room for it."""
        if ids and ids[-1] != self.eos_id and len(ids) < max_tokens and self._at_stop(ids):
            return ids + [self.eos_id]
        return ids


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, [b, longest prompt], the prompts aligned on the right."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        attention[i, width - len(p):] = 1
    return input_ids, attention


def sample_next(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0,
                generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """One token per row from last-position logits [b, V]: greedy at temperature 0, else sampling from the
    `top_k` most likely tokens (<= 0: all) and within them the nucleus `top_p`. `generators` (one per row) make
    each row draw from its own stream; without, all rows draw from torch's global one.

    >>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), temperature=0.0).tolist()
    [1]
    >>> sample_next(torch.tensor([[0.0, 2.0, 1.9]]), temperature=1.0, top_p=0.01).tolist()   # only the top token
    [1]
    >>> sample_next(torch.tensor([[0.0, 2.0, 1.9]]), temperature=1.0, top_k=1).tolist()
    [1]
    """
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float()
    if 0 < top_k < logits.shape[-1]:
        logits = logits.masked_fill(logits < logits.topk(top_k, dim=-1).values[:, -1:], float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the tokens after the nucleus is full
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    return torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators, strict=True)])
