"""CPU rollout servers: Ray actors that serve verl's token-in/token-out `generate` (what `LLMServerClient`
calls on a vLLM/SGLang server actor) from a model held in the actor. `BatchingRolloutServer` is the shared
part; `HFRolloutServer` (here) runs a Hugging Face causal LM with transformers through the CPU engine's
decode loop, `vllm_server.VLLMRolloutServer` runs vLLM's CPU build in-process.

A server answers the control calls verl makes on a server actor (sleep, wake_up, clear_kv_cache, abort, ...) as
no-ops, because there is no KV-cache pool or device memory to release, and it takes new weights from the
trainer through `load_weights` (called by `hf_rollout.HFCPUServerAdapter`).

Concurrent requests are micro-batched: each `generate` call queues its prompt; one task takes the queued
requests that can share a batch (up to `max_batch`) and runs the backend's `_generate_batch` in a worker
thread. Per request, the output stops at the first EOS or at its own `max_tokens`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    key: tuple  # sampling settings shared by a batch
    future: asyncio.Future = field(repr=False, default=None)


def sampling_key(params: dict[str, Any]) -> tuple:
    """(do_sample, temperature, top_p, top_k, want_logprobs): what one decoded batch must share."""
    temperature = float(params.get("temperature", 1.0) or 0.0)
    top_p = float(params.get("top_p", 1.0) or 1.0)
    top_k = int(params.get("top_k", -1) or -1)
    greedy = temperature <= 0.0 or params.get("do_sample") is False
    return (not greedy, 1.0 if greedy else temperature, top_p, top_k if top_k > 0 else 0,
            bool(params.get("logprobs", False)))


def model_path(model_config) -> str:
    return os.path.expanduser(getattr(model_config, "local_path", None) or model_config.path)


class BatchingRolloutServer:
    """What every CPU rollout server shares: verl's server-actor interface, the request queue and batching,
    the weights' step stamp. Subclasses implement `_generate_batch` and `load_weights`."""

    def __init__(self, config, model_config, replica_rank: int = 0, node_rank: int = 0,
                 max_batch: Optional[int] = None, num_threads: Optional[int] = None):
        self.config = config
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.global_steps: Optional[int] = None
        self.max_batch = int(max_batch or os.environ.get("RSTAR2_CPU_ROLLOUT_MAX_BATCH", DEFAULT_MAX_BATCH))
        threads = int(num_threads or os.environ.get("RSTAR2_CPU_ROLLOUT_THREADS", 0) or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.max_model_len = int(config.max_model_len or (config.prompt_length + config.response_length))
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None
        self._paused = False
        self.stats = {"requests": 0, "batches": 0, "tokens": 0, "generate_s": 0.0, "weight_loads": 0}

    def _batch_key(self, request: _Request) -> tuple:
        """Requests with equal keys may share one `_generate_batch` call."""
        return request.key

    def _generate_batch(self, batch: list[_Request]) -> list[tuple[list[int], Optional[list[float]]]]:
        raise NotImplementedError

    def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Take one bucket of trainer tensors (HF names); returns how many it took."""
        raise NotImplementedError

    async def finish_weight_update(self) -> None:
        """Called once after the last bucket of a sync (backends that load all weights at once do it here)."""

    # ------------------------------------------------------------------ generation

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data=None, video_data=None, audio_data=None, mm_processor_kwargs=None,
                       priority: int = 0, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("the CPU rollout servers serve text only")
        prompt_ids = [int(t) for t in prompt_ids]
        params = dict(sampling_params)
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room within max_model_len "
                             f"{self.max_model_len}")
        limit = params.pop("max_tokens", None) or params.pop("max_new_tokens", None)
        if limit is None:
            limit = min(self.config.response_length,
                        self.config.prompt_length + self.config.response_length - len(prompt_ids))
        max_tokens = max(1, min(int(limit), room))
        if self._paused:
            return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted",
                               extra_fields={"global_steps": self.global_steps})
        self._ensure_worker()
        request = _Request(prompt_ids, max_tokens, sampling_key(params), asyncio.get_running_loop().create_future())
        await self._queue.put(request)
        token_ids, log_probs = await request.future
        return TokenOutput(token_ids=token_ids, log_probs=log_probs, stop_reason="completed",
                           num_preempted=0, extra_fields={"global_steps": self.global_steps})

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        pending: list[_Request] = []
        while True:
            if not pending:
                pending.append(await self._queue.get())
            await asyncio.sleep(0)  # let requests that arrive together join the batch
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            key = self._batch_key(pending[0])
            batch = [r for r in pending if self._batch_key(r) == key][: self.max_batch]
            pending = [r for r in pending if r not in batch]
            try:
                results = await asyncio.to_thread(self._generate_batch, batch)
            except Exception as e:  # hand the error to every caller instead of killing the server
                logger.exception("CPU rollout batch failed")
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)
                continue
            for r, result in zip(batch, results):
                if not r.future.done():
                    r.future.set_result(result)

    # ------------------------------------------------------------------ weights version

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    # ------------------------------------------------------------------ control calls (no device memory)

    def get_server_address(self):
        import ray

        return ray.util.get_node_ip_address(), 0

    def get_stats(self) -> dict:
        return dict(self.stats)

    async def wake_up(self, tags=None):
        pass

    async def sleep(self):
        pass

    async def clear_kv_cache(self):
        pass

    async def release_kv_cache(self):
        pass

    async def resume_kv_cache(self):
        pass

    async def wait_for_requests_to_drain(self):
        while self._queue is not None and not self._queue.empty():
            await asyncio.sleep(0.05)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False):
        # Requests already in a batch finish (CPU generate cannot be interrupted); new ones are refused
        # until resume_generation().
        self._paused = bool(reject_request)
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True):
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self):
        self._paused = False

    async def start_profile(self, **kwargs):
        pass

    async def stop_profile(self):
        pass


class HFRolloutServer(BatchingRolloutServer):
    """Rollout server `hf_cpu`: a transformers causal LM in float32 with sdpa attention, decoded by the CPU
    engine's own loop (`rstar2_agent.engine.generator.BatchingGenerator.decode`: one KV cache, finished rows
    leave the batch), so verl-on-CPU and `rstar2-agent train` generate the same way. No stop strings: on the
    verl path a turn ends at EOS (any of the generation config's) or at the request's `max_tokens`."""

    def __init__(self, config, model_config, **kwargs):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        from rstar2_agent.engine.generator import BatchingGenerator

        super().__init__(config, model_config, **kwargs)
        path = model_path(model_config)
        if getattr(config, "load_format", "auto") == "dummy":
            # verl's hybrid default: the first weight sync (before any generation) brings the real weights,
            # so start from a random model of the right shape, as vLLM's dummy loader does.
            self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), torch_dtype=torch.float32,
                                                          attn_implementation="sdpa").eval()
            try:
                self.model.generation_config = GenerationConfig.from_pretrained(path)
            except OSError:
                pass
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32,
                                                              attn_implementation="sdpa").eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.model.config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        self.generator = BatchingGenerator(self.model, tokenizer, max_num_seqs=self.max_batch, stop_strings=(),
                                           eos_token_ids=sorted(self.eos_ids))
        self._params = self.model.state_dict(keep_vars=True)

    def _generate_batch(self, batch: list[_Request]) -> list[tuple[list[int], Optional[list[float]]]]:
        do_sample, temperature, top_p, top_k, want_logprobs = batch[0].key
        start = time.time()
        params = {"temperature": temperature if do_sample else 0.0, "top_p": top_p, "top_k": top_k}
        rows, logprobs = self.generator.decode([r.prompt_ids for r in batch], params,
                                               [r.max_tokens for r in batch], logprobs=want_logprobs)
        results = [(ids, logprobs[i] if logprobs is not None else None) for i, ids in enumerate(rows)]
        self.stats["tokens"] += sum(len(ids) for ids in rows)
        self.stats["requests"] += len(batch)
        self.stats["batches"] += 1
        self.stats["generate_s"] += time.time() - start
        return results

    @torch.no_grad()
    def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Copy trainer tensors (HF names) into the served model; returns how many were loaded.

        Names the model does not have are an error: a silent miss would serve stale weights.
        """
        unknown = [name for name, _ in named_tensors if name not in self._params]
        if unknown:
            raise KeyError(f"CPU rollout model has no parameters named {unknown[:5]} "
                           f"({len(unknown)} unknown of {len(named_tensors)})")
        for name, tensor in named_tensors:
            target = self._params[name]
            target.data.copy_(tensor.to(dtype=target.dtype).view_as(target))
        self.stats["weight_loads"] += 1
        return len(named_tensors)

    def weight_names(self) -> list[str]:
        return list(self._params)
