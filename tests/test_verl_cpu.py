"""rstar2_agent.verl_cpu: verl's own trainer on CPU (platform "cpu", rollout "hf_cpu", the CPU preset).

The parts are tested here without Ray; tests/test_verl_cpu_e2e.py runs the whole `main_ppo` on CPU.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from rstar2_agent.verl_cpu.platform import CPUDeviceModule, PlatformCPU, _dedupe_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------ platform


def test_backend_string_loses_the_duplicate_device():
    assert _dedupe_backend("cpu:gloo,cpu:gloo") == "cpu:gloo"
    assert _dedupe_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    assert _dedupe_backend("gloo") == "gloo"
    assert _dedupe_backend(None) is None


def test_platform_is_chosen_only_by_env(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert not PlatformCPU().is_platform_available(use_smi_check=True)  # a GPU machine keeps its platform
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    assert PlatformCPU().is_platform_available(use_smi_check=True)


def test_platform_answers_for_cpu():
    platform = PlatformCPU()
    assert (platform.device_name, platform.communication_backend_name(), platform.current_device()) == \
        ("cpu", "gloo", "cpu")
    assert platform.ray_resource_name() == "GPU"
    assert platform.ray_resource_options(0.5) == {"num_gpus": 0.5}
    assert not platform.is_ipc_supported()
    torch.zeros(2).to(platform.current_device())  # verl passes current_device() to .to()


def test_device_module_has_the_cuda_calls_verl_makes():
    dev = CPUDeviceModule()
    assert dev.memory_allocated() == dev.max_memory_reserved() == 0
    free, total = dev.mem_get_info()
    assert 0 < free <= total
    dev.empty_cache(), dev.synchronize(), dev.set_device(0), dev.ipc_collect()
    stream = dev.Stream()
    stream.wait_stream(dev.current_stream())
    with dev.stream(stream):
        pass
    state = dev.get_rng_state()
    dev.set_rng_state(state)


def test_registration_adds_platform_and_rollouts():
    import rstar2_agent.verl_plugins  # noqa: F401
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from rstar2_agent.verl_cpu.hf_rollout import HFCPUReplica, VLLMCPUReplica

    assert PlatformRegistry.get("cpu") is PlatformCPU
    assert RolloutReplicaRegistry.get("hf_cpu") is HFCPUReplica
    assert RolloutReplicaRegistry.get("vllm_cpu") is VLLMCPUReplica
    assert _ROLLOUT_REGISTRY[("hf_cpu", "async")].endswith("HFCPUServerAdapter")


# -------------------------------------------------------------------------------------------- rollout server


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from rstar2_agent.verl_cpu.models import save_tiny

    return save_tiny(str(tmp_path_factory.mktemp("tiny")))


def make_server(folder, load_format="dummy"):
    from rstar2_agent.verl_cpu.hf_server import HFRolloutServer

    config = SimpleNamespace(max_model_len=512, prompt_length=256, response_length=24, load_format=load_format)
    return HFRolloutServer(config, SimpleNamespace(path=folder), max_batch=8)


def real_weights(folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    return model, list(model.state_dict().items())


def test_dummy_server_takes_the_trainer_weights(tiny_folder):
    server = make_server(tiny_folder)
    model, weights = real_weights(tiny_folder)
    name, tensor = weights[1]
    assert not torch.equal(server._params[name], tensor)  # random start, as vLLM's dummy loader
    assert server.load_weights(weights) == len(weights)
    for name, tensor in weights:
        assert torch.equal(server._params[name], tensor), name
    with pytest.raises(KeyError):
        server.load_weights([("no.such.weight", torch.zeros(1))])


def test_generate_returns_verl_token_output_with_weight_version(tiny_folder):
    from verl.workers.rollout.replica import TokenOutput

    server = make_server(tiny_folder, load_format="auto")

    async def go():
        await server.set_global_steps(3)
        return await server.generate([5, 6, 7], {"temperature": 1.0, "logprobs": True, "max_tokens": 7}, "r1")

    out = asyncio.run(go())
    assert isinstance(out, TokenOutput)
    assert 1 <= len(out.token_ids) <= 7 and len(out.log_probs) == len(out.token_ids)
    assert out.stop_reason == "completed"
    assert out.extra_fields["global_steps"] == 3


def test_batched_requests_match_the_unpadded_model(tiny_folder):
    """Concurrent requests share one left-padded generate call; each response's log-probs must equal a plain
    forward pass over that prompt + response alone (so padding leaks into nothing)."""
    server = make_server(tiny_folder, load_format="auto")
    model, _ = real_weights(tiny_folder)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20, 21]]
    params = {"temperature": 0.7, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": 6}

    async def go():
        return await asyncio.gather(*[server.generate(p, dict(params), f"r{i}") for i, p in enumerate(prompts)])

    outs = asyncio.run(go())
    assert server.stats["batches"] == 1 and server.stats["requests"] == 3
    for prompt, out in zip(prompts, outs):
        ids = torch.tensor([prompt + out.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1: -1] / params["temperature"]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4), (prompt, out)


def test_greedy_server_output_equals_hf_generate(tiny_folder):
    """The server decodes with the CPU engine's loop (rows leave the batch as they finish); at temperature 0
    each response must be what HF `generate` writes for that prompt alone, up to its own `max_tokens`."""
    server = make_server(tiny_folder, load_format="auto")
    model, _ = real_weights(tiny_folder)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20, 21]]
    limits = [12, 5, 9]

    async def go():
        return await asyncio.gather(*[server.generate(p, {"temperature": 0.0, "max_tokens": n}, f"g{i}")
                                      for i, (p, n) in enumerate(zip(prompts, limits))])

    outs = asyncio.run(go())
    assert server.stats["batches"] == 1
    eos = sorted(server.eos_ids)
    for prompt, limit, out in zip(prompts, limits, outs):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 do_sample=False, max_new_tokens=limit, eos_token_id=eos, pad_token_id=eos[0],
                                 temperature=None, top_p=None, top_k=None)
        assert out.token_ids == ref[0, len(prompt):].tolist(), (prompt, out.token_ids)
        assert out.log_probs is None


def test_adapter_sends_buckets_then_finishes_and_stamps_the_step():
    from rstar2_agent.verl_cpu.hf_rollout import HFCPUServerAdapter

    calls = []

    class Method:
        def __init__(self, name, result=None):
            self.name, self.result = name, result

        def remote(self, *args):
            calls.append((self.name, args))

            async def done():
                return len(args[0]) if self.name == "load_weights" else None

            return done()

    server = SimpleNamespace(load_weights=Method("load_weights"), finish_weight_update=Method("finish"),
                             set_global_steps=Method("steps"))
    adapter = object.__new__(HFCPUServerAdapter)
    adapter.config = SimpleNamespace(name="hf_cpu")
    adapter.rollout_rank, adapter.server_handle, adapter.bucket_bytes = 0, server, 100
    weights = [(f"w{i}", torch.zeros(10)) for i in range(5)]  # 40 bytes each: a bucket closes at >= 100 bytes
    asyncio.run(adapter.update_weights(iter(weights), global_steps=4))
    names = [c[0] for c in calls]
    assert names == ["load_weights", "load_weights", "finish", "steps"]
    assert [len(c[1][0]) for c in calls[:2]] == [3, 2]
    assert [n for c in calls if c[0] == "load_weights" for n, _ in c[1][0]] == [n for n, _ in weights]
    assert calls[-1][1] == (4,)


def test_non_leader_ranks_still_consume_the_generator():
    """DTensor.full_tensor() in verl's generator is a collective: every rank must iterate it."""
    from rstar2_agent.verl_cpu.hf_rollout import HFCPUServerAdapter

    adapter = object.__new__(HFCPUServerAdapter)
    adapter.config = SimpleNamespace(name="hf_cpu")
    adapter.rollout_rank, adapter.server_handle, adapter.bucket_bytes = 1, None, 100
    seen = []

    def weights():
        for i in range(3):
            seen.append(i)
            yield f"w{i}", torch.zeros(1)

    asyncio.run(adapter.update_weights(weights(), global_steps=1))
    assert seen == [0, 1, 2]


# -------------------------------------------------------------------------------------------- data, config


def test_task_rows_have_the_recipe_schema(tmp_path):
    import pyarrow.parquet as pq

    from rstar2_agent.verl_cpu.data import build

    paths = build(str(tmp_path), limit=3)
    rows = pq.read_table(paths["train"]).to_pylist()
    assert len(rows) == 3
    row = rows[0]
    assert row["agent_name"] == "rstar2_agent"
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"]
    assert row["reward_model"]["ground_truth"] == row["extra_info"]["answer"]
    assert sorted(paths) == ["holdout", "test", "train"]
    holdout = {r["reward_model"]["ground_truth"] + r["prompt"][0]["content"] for r in pq.read_table(paths["holdout"]).to_pylist()}
    test = {r["reward_model"]["ground_truth"] + r["prompt"][0]["content"] for r in pq.read_table(paths["test"]).to_pylist()}
    assert len(holdout) == 3 and not holdout & test  # the untouched split, not a copy of the dev one


def test_engine_system_prompt_rows_reach_verls_dataset(tmp_path, tiny_folder):
    """`--engine-system-prompt` rows, read by verl's own RLHFDataset: the system message first, then the problem."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from rstar2_agent.engine.config import DEFAULT_SYSTEM_PROMPT
    from rstar2_agent.verl_cpu.data import main

    main(["--out", str(tmp_path), "--limit", "2", "--engine-system-prompt"])
    config = OmegaConf.create({"max_prompt_length": 1024, "return_raw_chat": True, "prompt_key": "prompt",
                               "filter_overlong_prompts": False})
    dataset = RLHFDataset(data_files=str(tmp_path / "holdout.parquet"),
                          tokenizer=AutoTokenizer.from_pretrained(tiny_folder), config=config)
    messages = list(dataset[0]["raw_prompt"])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == DEFAULT_SYSTEM_PROMPT and messages[1]["content"]


def test_cpu_preset_composes_and_selects_the_platform(tiny_folder):
    """In a subprocess: resolving trainer.device switches the process to platform "cpu"."""
    script = f"""
import os
os.environ.pop("VERL_PLATFORM", None)
import rstar2_agent.verl_plugins
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.plugin.platform import get_platform
with initialize_config_dir(config_dir={os.path.join(ROOT, "rstar2_agent", "config")!r}, version_base=None):
    cfg = compose("rstar2_agent_trainer_cpu", overrides=["cpu_model={tiny_folder}"])
assert get_platform().device_name == "cuda"          # verl's fallback before the config is read
assert cfg.trainer.device == "cpu"
assert get_platform().device_name == "cpu" and os.environ["VERL_PLATFORM"] == "cpu"
OmegaConf.resolve(cfg)
r = cfg.actor_rollout_ref
assert r.model.path == {tiny_folder!r} and r.rollout.name == "hf_cpu" and r.actor.strategy == "fsdp2"
assert cfg.reward.reward_manager.name == "code_judge" and cfg.trainer.v1.trainer_mode == "rstar2_agent"
assert r.rollout.multi_turn.format == "rstar2_agent_hermes" and r.rollout.agent.agent_loop_config_path
assert cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# What the CPU preset changes in the recipe on purpose; everything else of rstar2_agent_recipe.yaml must compose
# to the same value in both trainer configs.
CPU_CHANGES = {"actor_rollout_ref.rollout.multi_turn.max_assistant_turns", "reward.reward_kwargs.pool_workers",
               "ray_kwargs.ray_init.runtime_env.env_vars"}


def leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def test_both_trainer_configs_carry_the_one_recipe(tiny_folder):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import rstar2_agent.main  # noqa: F401 - resolvers, as `python3 -m rstar2_agent.main` has them

    config_dir = os.path.join(ROOT, "rstar2_agent", "config")
    recipe = dict(leaves(OmegaConf.to_container(OmegaConf.load(os.path.join(config_dir, "rstar2_agent_recipe.yaml")))))
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        configs = {name: dict(leaves(OmegaConf.to_container(compose(name, overrides=extra))))
                   for name, extra in (("rstar2_agent_trainer", []),
                                       ("rstar2_agent_trainer_cpu", [f"cpu_model={tiny_folder}"]))}
    for path, value in recipe.items():
        if any(path == c or path.startswith(c + ".") for c in CPU_CHANGES):
            continue
        for name, config in configs.items():
            assert config.get(path) == value, f"{name}: {path} is {config.get(path)!r}, the recipe says {value!r}"
