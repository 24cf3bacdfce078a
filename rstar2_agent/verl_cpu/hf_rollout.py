"""Rollouts `hf_cpu` and `vllm_cpu` for verl: the replicas that launch `hf_server.HFRolloutServer` /
`vllm_server.VLLMRolloutServer`, and the trainer-side adapter that syncs the FSDP weights into either.

verl wires a rollout backend in two places, both extended here without editing verl:
- `RolloutReplicaRegistry` (verl/workers/rollout/replica.py): `LLMServerManager` builds one replica per
  rollout world (`rollout.tensor_model_parallel_size` x dp x pp trainer ranks; 1 on CPU) and calls
  `init_hybrid(worker_group)`, then `launch_servers()`. `HFCPUReplica.launch_servers` starts one
  server actor on the node of the replica's first trainer worker, named like verl's vLLM servers
  (`<rollout.name>_server_<replica>_<node>`), so the adapter can find it with `ray.get_actor`.
- `_ROLLOUT_REGISTRY` (verl/workers/rollout/base.py): `ActorRolloutRefWorker.init_model` instantiates the
  `(rollout.name, "async")` entry in every trainer worker. With `checkpoint_engine.backend: naive`, verl's
  `update_weights` (verl/workers/engine_workers.py:728) hands it the generator of full `(hf_name, tensor)`
  pairs from `engine.get_per_tensor_param()`. `HFCPUServerAdapter.update_weights` consumes it on every rank
  (the generator all-gathers DTensors, a collective) and the replica's rank 0 sends buckets of host tensors
  to the server through Ray (`load_weights` per bucket, then `finish_weight_update`), then stamps the
  server with the step (`set_global_steps`), which the server returns in
  `TokenOutput.extra_fields["global_steps"]` for verl's staleness metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Generator, Optional

import ray
import torch

from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica


logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf_cpu"
BUCKET_BYTES = 256 << 20


def server_actor_name(rollout_name: str, replica_rank: int, node_rank: int = 0) -> str:
    return f"{rollout_name}_server_{replica_rank}_{node_rank}"


class HFCPUReplica(RolloutReplica):
    """One transformers rollout server per replica (hybrid mode: beside the trainer workers)."""

    def server_class(self):
        from rstar2_agent.verl_cpu.hf_server import HFRolloutServer

        return HFRolloutServer

    async def launch_servers(self):
        if not self.workers:
            raise RuntimeError("HFCPUReplica supports hybrid mode only (no trainer workers were given)")
        node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        server_cls = ray.remote(self.server_class())
        name = server_actor_name(self.config.name, self.replica_rank)
        server = server_cls.options(
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id,
                                                                                           soft=False),
            name=name,
            num_cpus=0,  # the trainer workers and the server take turns on the same cores
            max_concurrency=self.max_concurrency,
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        host, _ = await server.get_server_address.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{host}:{name}"  # a unique key for verl's load balancer; there is no HTTP


class VLLMCPUReplica(HFCPUReplica):
    """Rollout `vllm_cpu`: the same replica around `vllm_server.VLLMRolloutServer` (vLLM's CPU build)."""

    def server_class(self):
        from rstar2_agent.verl_cpu.vllm_server import VLLMRolloutServer

        return VLLMRolloutServer


class HFCPUServerAdapter(BaseRollout):
    """The trainer worker's handle on its replica's `HFRolloutServer` (see the module docstring)."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        rollout_world = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                         * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // rollout_world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world
        self.server_handle = None
        self.bucket_bytes = int(os.environ.get("RSTAR2_CPU_WEIGHT_BUCKET_BYTES", BUCKET_BYTES))
        self.sleep_level = 2  # read by verl's update_weights for LoRA; nothing sleeps here

    def _server(self):
        if self.rollout_rank != 0:
            return None
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.config.name, self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        pass

    async def release(self):
        pass

    @torch.no_grad()
    async def update_weights(self, weights: Generator[tuple[str, torch.Tensor], None, None],
                             wire_format: str = "named_tensors", global_steps: Optional[int] = None,
                             peft_config=None, **kwargs: Any):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"{self.config.name} rollout takes full tensors only, not {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError(f"{self.config.name} rollout does not serve LoRA adapters; "
                                      "set model.lora.merge=True")
        start = time.time()
        server = self._server()
        pending, bucket, size, sent, nbytes = [], [], 0, 0, 0
        for name, tensor in weights:  # every rank iterates: DTensor.full_tensor() is a collective
            if server is None:
                continue
            host = tensor.detach().to("cpu", copy=True).contiguous()
            bucket.append((name, host))
            size += host.numel() * host.element_size()
            nbytes += host.numel() * host.element_size()
            if size >= self.bucket_bytes:
                pending.append(server.load_weights.remote(bucket))
                sent += len(bucket)
                bucket, size = [], 0
        if server is None:
            return
        if bucket:
            pending.append(server.load_weights.remote(bucket))
            sent += len(bucket)
        loaded = sum(await asyncio.gather(*pending))
        if loaded != sent:
            raise RuntimeError(f"{self.config.name} rollout loaded {loaded} of {sent} tensors")
        await server.finish_weight_update.remote()
        if global_steps is not None:
            await server.set_global_steps.remote(global_steps)
        print(f"{self.config.name} weight sync: {loaded} tensors, {nbytes / 2**20:.1f} MiB, {time.time() - start:.2f}s, "
              f"global_steps={global_steps}", flush=True)

    def generate_sequences(self, prompts):
        raise NotImplementedError(f"{self.config.name} serves the async agent-loop path only")
