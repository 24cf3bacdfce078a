"""The CPU engine's rollout server on vLLM's CPU build: `BatchingGenerator`'s interface, vLLM's decoding.

It is there for speed: on this machine (2 cores, SmolLM2-135M, 32 held-out prompts, greedy, same outputs) it
decodes 2.9x the engine's own loop at 128 new tokens each, 1.9x on turns that end at EOS
(benchmarks/cpu_generation.py --vllm-only, benchmarks/results/cpu_generation_vllm.txt): one thread per core,
prefix caching (a group's samples share their prompt's prefill), and no per-token log-probs unless asked
(`logprobs=True`; the engine's update recomputes them). `VLLMGenerator` keeps the interface the trainer
and the agent loop use: the async `__call__(request_id, token_ids, sampling_params) -> Generation` (token ids and their
log-probs), `generate_batch(prompts, params, max_tokens)`, `generated_tokens`; and adds `update_weights(model)`,
which the trainer calls after each optimizer step, because vLLM holds its own copy of the weights.

One thread owns the engine (`vllm.LLM` in this process, rstar2_agent.vllm_cpu): it takes the requests queued
since its last step into the engine and steps it, so a request joins the running batch at the next step and
leaves it when done (vLLM's continuous batching; no gather window is needed, unlike `BatchingGenerator`).

A turn ends as in `BatchingGenerator` (rstar2_agent/engine/generator.py): at EOS (kept), at its `max_tokens`, or
right after `</tool_call>` (`STOP_STRINGS`), in which case the EOS is appended when the budget has room, as if
the model had written it. That EOS is reported with log-prob 0: the generator, not the sampler, chose it.
Log-probs are vLLM's `processed_logprobs`, softmax(logits / temperature) after top-k/top-p; the engine
samples with top_p 1 and no top_k, where this equals `BatchingGenerator.decode`'s log-probs.

Differences that remain: vLLM checks the stop string in its detokenized text, so a token that completes
`</tool_call>` and carries more text ends the turn here but not in `BatchingGenerator`; and sampling draws
from vLLM's own generator (seeded once, `trainer.seed`), one stream for all requests, so a request's draws
depend on what else runs with it and a validation does not repeat its samples. `BatchingGenerator` gives each
request its own seeded generator; vLLM's per-request `SamplingParams.seed` would do the same here, but vLLM's CPU
runner fails on them once a prefill is chunked ("CPU Generator does not use offset", vllm 0.31.0), so it is left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import threading
from typing import Any, Mapping, Optional, Sequence

import torch

from rstar2_agent import vllm_cpu
from rstar2_agent.cores import usable_cores
from rstar2_agent.engine.generator import STOP_STRINGS
from rstar2_agent.rollout import Generation

_CLOSE = object()


class VLLMGenerator:
    """An async `generate` for the agent loop on one in-process vLLM engine; `update_weights` after each step."""

    def __init__(self, model, tokenizer, model_path: str, max_num_seqs: int = 32, max_model_len: int = 2048,
                 stop_strings: Sequence[str] = STOP_STRINGS, eos_token_ids: Optional[Sequence[int]] = None,
                 seed: int = 0, kv_cache_gib: int = 2, threads: int = 0, logprobs: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.eos_id = tokenizer.eos_token_id
        self.eos_ids = sorted(set(eos_token_ids) if eos_token_ids else {self.eos_id})
        self.max_num_seqs = max(1, max_num_seqs)
        self.logprobs = logprobs  # off by default: the engine's update recomputes them, and they cost ~13% decode
        # vLLM's CPU worker lowers this process's torch threads to 1 and turns `torch.set_num_threads` into a
        # no-op; the trainer's update shares the process, so both are put back (the function by
        # `vllm_cpu.build_llm`, the count here). The engine thread runs at
        # `threads` (default one per usable core, vLLM's own choice: on 2 cores 4 threads cost a third of its
        # decode speed; its attention kernel checks that the threads it runs on match the ones it planned for)
        self.threads = threads if threads > 0 else usable_cores()
        before = torch.get_num_threads()
        self.llm = vllm_cpu.build_llm(model_path, max_model_len=max_model_len, max_num_seqs=self.max_num_seqs,
                                      seed=seed, kv_cache_gib=kv_cache_gib, logprobs_mode="processed_logprobs",
                                      enable_prefix_caching=True)
        torch.set_num_threads(before)
        self._engine = self.llm.llm_engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # a step and a weight reload never overlap
        self._running: dict[str, tuple[concurrent.futures.Future, int]] = {}
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self.generated_tokens = 0  # new tokens returned, for tokens/s
        self.weight_updates = 0

    # ------------------------------------------------------------------------------------------ requests

    def submit(self, token_ids: Sequence[int], params: Mapping[str, Any]) -> concurrent.futures.Future:
        """Queue one turn (`params`: max_tokens, temperature (0 = greedy), top_p, top_k, ignore_eos); a Future
        of its `Generation`."""
        from vllm import SamplingParams

        max_tokens = int(params["max_tokens"])
        temperature = float(params.get("temperature", 1.0) or 0.0)
        top_k = int(params.get("top_k", 0) or 0)
        ignore_eos = bool(params.get("ignore_eos"))
        sampling = SamplingParams(max_tokens=max_tokens, temperature=max(temperature, 0.0),
                                  top_p=float(params.get("top_p", 1.0) or 1.0), top_k=top_k if top_k > 0 else -1,
                                  stop=self.stop_strings or None, include_stop_str_in_output=True,
                                  stop_token_ids=[] if ignore_eos else self.eos_ids, ignore_eos=ignore_eos,
                                  logprobs=0 if self.logprobs else None)
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._start()
        self._inbox.put((list(token_ids), sampling, max_tokens, future))
        return future

    async def __call__(self, request_id: str, token_ids: list[int], sampling_params: Mapping[str, Any]) -> Generation:
        return await asyncio.wrap_future(self.submit(token_ids, sampling_params))

    def generate_batch(self, prompts: Sequence[Sequence[int]], params: Mapping[str, Any],
                       max_tokens: Sequence[int]) -> list[list[int]]:
        """The new token ids of each prompt, decoded together (as `BatchingGenerator.generate_batch`)."""
        futures = [self.submit(p, dict(params, max_tokens=m)) for p, m in zip(prompts, max_tokens)]
        return [f.result().token_ids for f in futures]

    # ------------------------------------------------------------------------------------------- weights

    def update_weights(self, model=None) -> None:
        """Load the transformers model's current weights (default: the one given at construction) into vLLM.
        Called between rollouts, when no request runs; a request queued meanwhile waits for the new weights."""
        model = self.model if model is None else model
        with self._lock, torch.no_grad():
            vllm_cpu.reload_weights(self.llm, [(name, tensor.detach()) for name, tensor in
                                               model.state_dict().items()])
        self.weight_updates += 1

    # ------------------------------------------------------------------------------------ the engine thread

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="vllm-generator", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the engine thread (requests still running fail)."""
        if self._thread is not None and self._thread.is_alive():
            self._inbox.put(_CLOSE)
            self._thread.join()

    def _serve(self) -> None:
        from vllm.inputs import TokensPrompt

        torch.set_num_threads(self.threads)  # OpenMP's count is per thread: this one starts at the default
        while True:
            # block while idle; otherwise take whatever was queued since the last step
            items = [self._inbox.get()] if not self._running else []
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if any(item is _CLOSE for item in items):
                self._fail([f for f, _ in self._running.values()] +
                           [item[3] for item in items if item is not _CLOSE], RuntimeError("generator closed"))
                return
            with self._lock:
                for ids, sampling, max_tokens, future in items:
                    request_id = str(next(self._ids))
                    try:  # a request vLLM refuses (a prompt longer than max_model_len) fails alone
                        self._engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids), sampling)
                    except Exception as exc:  # noqa: BLE001 - its caller must hear about it
                        self._fail([future], exc)
                        continue
                    self._running[request_id] = (future, max_tokens)
                try:
                    outputs = self._engine.step() if self._running else []
                except Exception as exc:  # noqa: BLE001 - every running turn must hear about it
                    self._abort(exc)
                    continue
            for out in outputs:
                if out.finished and out.request_id in self._running:
                    future, max_tokens = self._running.pop(out.request_id)
                    self.generated_tokens += len(out.outputs[0].token_ids)
                    if not future.done():
                        future.set_result(self._close_turn(out.outputs[0], max_tokens))

    def _abort(self, exc: Exception) -> None:
        """After a failed step: drop the running requests from the engine and fail them."""
        running = list(self._running)
        futures = [f for f, _ in self._running.values()]
        self._running.clear()
        try:
            self._engine.abort_request(running)
        except Exception:  # noqa: BLE001 - the step's error is the one to report
            pass
        self._fail(futures, exc)

    @staticmethod
    def _fail(futures: list[concurrent.futures.Future], exc: Exception) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(exc)

    def _close_turn(self, completion, max_tokens: int) -> Generation:
        """A finished completion as the agent loop gets it: a turn cut at a stop string gets the EOS appended
        (log-prob 0) when the budget has room for it, as `BatchingGenerator.close_turn` does."""
        ids = list(completion.token_ids)
        logprobs = vllm_cpu.sampled_logprobs(completion)
        if isinstance(completion.stop_reason, str) and ids and ids[-1] not in self.eos_ids and len(ids) < max_tokens:
            ids.append(self.eos_id)
            logprobs = None if logprobs is None else logprobs + [0.0]
        return Generation(token_ids=ids, log_probs=logprobs)
