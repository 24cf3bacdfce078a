"""The CPU engine's rollout server: transformers generation behind the agent loop's `generate` interface.

The agent loop runs every trajectory as its own coroutine and calls `generate(request_id, token_ids, params)`
once per model turn, as it does against SGLang on the GPU path. On one CPU a single sequence is memory-bound
(SmolLM2-135M: ~13 tokens/s alone, ~95 tokens/s in a batch of 32), so `BatchingGenerator` gathers the calls
that are waiting and decodes them together, continuous-batching style: while one batch is decoding, new calls
queue up and go out together in the next one.

Between batches it waits briefly for stragglers (`gather_window_s`): the trajectories of the batch that just
finished run their tool calls on the code judge and queue their next turn a few hundred milliseconds apart, and
without the wait the first one back would go out alone, leaving the rest to queue for a whole decode. The wait
ends as soon as `max_num_seqs` requests are queued, or when none has arrived for `gather_window_s`.

    gen = BatchingGenerator(model, tokenizer, max_num_seqs=32)
    out = await gen("r1", prompt_ids, {"max_tokens": 64, "temperature": 1.0})   # Generation(token_ids=[...])

A turn ends at EOS (kept, like SGLang returns it) or right after a `</tool_call>` (the stop string; the agent
loop then closes the turn with the template's EOS text itself), or after `max_tokens`. Temperature 0 is greedy.
"""

from __future__ import annotations

import asyncio
import dataclasses
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


def sampling_key(params: Mapping[str, Any]) -> tuple:
    """Requests that can share one `generate` call (same sampling settings)."""
    return float(params.get("temperature", 1.0)), float(params.get("top_p", 1.0))


def cut_turn(new_ids: Sequence[int], eos_id: int, pad_id: int, max_tokens: int) -> list[int]:
    """One sequence's turn out of a batched `generate` output row: up to and including the first EOS, without
    the padding that follows a sequence finished early (at a stop string), at most `max_tokens`.

    >>> cut_turn([5, 6, 2, 0, 0], eos_id=2, pad_id=0, max_tokens=10)
    [5, 6, 2]
    >>> cut_turn([5, 6, 7, 0, 0], eos_id=2, pad_id=0, max_tokens=10)   # stopped at a stop string
    [5, 6, 7]
    >>> cut_turn([5, 6, 7, 8], eos_id=2, pad_id=0, max_tokens=3)
    [5, 6, 7]
    """
    ids = list(new_ids)[:max_tokens]
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    while ids and ids[-1] == pad_id:
        ids.pop()
    return ids


class BatchingGenerator:
    """An async `generate` for the agent loop that batches concurrent calls on one transformers model."""

    def __init__(self, model, tokenizer, max_num_seqs: int = 32, stop_strings: Sequence[str] = STOP_STRINGS,
                 gather_window_s: float = 0.25, max_gather_s: float = 2.0):
        self.model = model
        self.gather_window_s = gather_window_s
        self.max_gather_s = max_gather_s
        self.tokenizer = tokenizer
        self.max_num_seqs = max(1, max_num_seqs)
        self.stop_strings = list(stop_strings)
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pending: list[_Request] = []
        self._busy = False
        self._lock = threading.Lock()  # one generate at a time on the model
        self.generated_tokens = 0  # new tokens returned, for tokens/s

    async def __call__(self, request_id: str, token_ids: list[int], sampling_params: Mapping[str, Any]) -> Generation:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(token_ids), dict(sampling_params), future))
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
                                                         [int(r.params["max_tokens"]) for r in batch])
                except Exception as exc:  # noqa: BLE001 - every waiting trajectory must hear about it
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    continue
                for r, ids in zip(batch, outputs):
                    if not r.future.done():
                        r.future.set_result(Generation(token_ids=ids))
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
        while (len(self._pending) < min(returned, self.max_num_seqs) and loop.time() < min(quiet_until, deadline)):
            await asyncio.sleep(0.01)
            if len(self._pending) > seen:
                seen, quiet_until = len(self._pending), loop.time() + self.gather_window_s

    def generate_batch(self, prompts: Sequence[Sequence[int]], params: Mapping[str, Any],
                       max_tokens: Sequence[int]) -> list[list[int]]:
        """Left-pad the prompts, decode them together, and cut each row's turn."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            attention[i, width - len(p):] = 1
        temperature = float(params.get("temperature", 1.0))
        sampling = dict(do_sample=True, temperature=temperature, top_p=float(params.get("top_p", 1.0)), top_k=0) \
            if temperature > 0 else dict(do_sample=False)
        with self._lock, torch.no_grad():
            out = self.model.generate(input_ids, attention_mask=attention, max_new_tokens=max(max_tokens),
                                      eos_token_id=self.eos_id, pad_token_id=self.pad_id,
                                      stop_strings=self.stop_strings or None, tokenizer=self.tokenizer, **sampling)
        rows = [cut_turn(row[width:].tolist(), self.eos_id, self.pad_id, m) for row, m in zip(out, max_tokens)]
        self.generated_tokens += sum(len(r) for r in rows)
        return rows
