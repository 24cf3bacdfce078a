"""Which generator the CPU engine rolls out with: vLLM's CPU build where it can run, else `BatchingGenerator`.

`actor_rollout_ref.rollout.name` picks it: `auto` (the default) takes vLLM when `import vllm` works in this
Python and its CPU attention takes the model's head size (not the `tiny` model's 16), and the transformers
loop otherwise, so nothing changes where vLLM is not installed; `hf` always takes the transformers loop; `vllm`
insists on vLLM and stops with the reason when it cannot run. Both generators have the same interface; vLLM's
keeps its own copy of the weights, which the trainer refreshes after each optimizer step (`sync_weights`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

BACKENDS = ("auto", "hf", "vllm")


def choose(name: str, model_config: Any, model_dir: Optional[str]) -> tuple[str, str]:
    """("vllm" or "hf", why) for the configured `name`, the model's transformers config and its folder
    (None for a model built in-process, which vLLM cannot load)."""
    from rstar2_agent import vllm_cpu

    if name not in BACKENDS:
        raise SystemExit(f"actor_rollout_ref.rollout.name={name!r}: choose one of {list(BACKENDS)}")
    if name == "hf":
        reason = None
    elif model_dir is None:
        reason = "the model is built in-process (vLLM loads a model folder)"
    else:
        reason = vllm_cpu.unsupported_reason(model_config)
    return vllm_cpu.pick(name, reason, "hf", "actor_rollout_ref.rollout.name=")


def build_generator(cfg, model, tokenizer, model_dir: Optional[str], echo: Callable[[str], None] = print):
    """The rollout generator for the engine's config (see `choose`), with a line saying which runs and why."""
    rollout = cfg.actor_rollout_ref.rollout
    backend, why = choose(rollout.name, model.config, model_dir)
    if backend == "vllm":
        from rstar2_agent.engine.vllm_generator import VLLMGenerator

        data = cfg.data
        max_model_len = data.max_prompt_length + data.max_response_length + rollout.multi_turn.max_tool_response_length
        generator = VLLMGenerator(model, tokenizer, model_dir, max_num_seqs=rollout.max_num_seqs,
                                  max_model_len=max_model_len, seed=cfg.trainer.seed)
        echo(f"rollout backend: vLLM CPU ({why})")
        return generator
    from rstar2_agent.engine.generator import BatchingGenerator

    echo(f"rollout backend: transformers BatchingGenerator ({why})")
    return BatchingGenerator(model, tokenizer, rollout.max_num_seqs, seed=cfg.trainer.seed)


def sync_weights(generator, model) -> bool:
    """After an optimizer step: give a generator that holds its own copy of the weights the model's new ones
    (BatchingGenerator decodes with `model` itself and needs nothing). True when weights were loaded."""
    update = getattr(generator, "update_weights", None)
    if update is None:
        return False
    update(model)
    return True


def close(generator) -> None:
    closer = getattr(generator, "close", None)
    if closer is not None:
        closer()
