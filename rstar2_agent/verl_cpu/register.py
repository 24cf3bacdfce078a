"""Registrations of rstar2_agent.verl_cpu with verl (see the package docstring); imported by verl_plugins."""
from __future__ import annotations

from rstar2_agent.verl_cpu.platform import PLATFORM_NAME, PlatformCPU, apply_cpu_runtime_patches, cpu_platform_selected

ROLLOUT_NAME = "hf_cpu"
VLLM_ROLLOUT_NAME = "vllm_cpu"
ADAPTER = "rstar2_agent.verl_cpu.hf_rollout.HFCPUServerAdapter"


def _load_hf_replica():
    from rstar2_agent.verl_cpu.hf_rollout import HFCPUReplica

    return HFCPUReplica


def _load_vllm_replica():
    from rstar2_agent.verl_cpu.hf_rollout import VLLMCPUReplica

    return VLLMCPUReplica


def _resolve_model(name: str) -> str:
    from rstar2_agent.verl_cpu.models import resolve_model

    return resolve_model(str(name))


def select_cpu_platform() -> str:
    """Resolver `${rstar2_cpu_device:}`: make this process use platform "cpu"; returns the device name "cpu"."""
    import os

    from verl.plugin.platform import platform_manager

    os.environ["VERL_PLATFORM"] = PLATFORM_NAME
    current = platform_manager._current_platform
    if current is not None and not isinstance(current, PlatformCPU):
        platform_manager.set_platform(PlatformCPU())
    apply_cpu_runtime_patches()
    return "cpu"


def register() -> None:
    from omegaconf import OmegaConf

    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_replica)
    RolloutReplicaRegistry.register(VLLM_ROLLOUT_NAME, _load_vllm_replica)
    _ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = ADAPTER
    _ROLLOUT_REGISTRY[(VLLM_ROLLOUT_NAME, "async")] = ADAPTER  # same adapter: both servers take buckets
    OmegaConf.register_new_resolver("rstar2_cpu_device", select_cpu_platform, replace=True)
    OmegaConf.register_new_resolver("rstar2_cpu_model", _resolve_model, replace=True)
    apply_cpu_runtime_patches()


register()

__all__ = ["PLATFORM_NAME", "PlatformCPU", "ROLLOUT_NAME", "VLLM_ROLLOUT_NAME", "cpu_platform_selected", "register"]
