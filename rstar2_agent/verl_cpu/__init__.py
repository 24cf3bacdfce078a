"""verl 0.9.1's own trainer (`main_ppo`, TaskRunnerV1) on a CPU-only machine, added from outside verl.

Importing this package (rstar2_agent.verl_plugins does, in every verl process) only *registers*:
- platform "cpu" in verl's `PlatformRegistry` (`platform.PlatformCPU`), used only when `VERL_PLATFORM=cpu`;
- rollout "hf_cpu": a transformers-backed replica in `RolloutReplicaRegistry` and its trainer-side
  `ServerAdapter` in `_ROLLOUT_REGISTRY` (`hf_rollout`).
- the OmegaConf resolver `${rstar2_cpu_device:}`, which the CPU preset uses as `trainer.device`: resolving
  it selects the CPU platform in that process (sets `VERL_PLATFORM=cpu`, and replaces a platform verl has
  already auto-detected), so `python3 -m rstar2_agent.main --config-name rstar2_agent_trainer_cpu` needs no
  environment variable: verl's `auto_set_device` reads `trainer.device` before it asks for the platform, and
  Ray workers inherit the driver's environment (the preset also lists it in `ray_init.runtime_env`).
When `VERL_PLATFORM=cpu` is set it also applies the two CPU runtime adaptations of
`platform.apply_cpu_runtime_patches` (gloo backend string, FSDP engine lookup). Nothing changes on a GPU
machine. The preset that uses all this is `rstar2_agent/config/rstar2_agent_trainer_cpu.yaml`.
"""

from __future__ import annotations

from rstar2_agent.verl_cpu.platform import PLATFORM_NAME, PlatformCPU, apply_cpu_runtime_patches, cpu_platform_selected

ROLLOUT_NAME = "hf_cpu"
ADAPTER = "rstar2_agent.verl_cpu.hf_rollout.HFCPUServerAdapter"


def _load_hf_replica():
    from rstar2_agent.verl_cpu.hf_rollout import HFCPUReplica

    return HFCPUReplica


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
    _ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = ADAPTER
    OmegaConf.register_new_resolver("rstar2_cpu_device", select_cpu_platform, replace=True)
    apply_cpu_runtime_patches()


register()

__all__ = ["PLATFORM_NAME", "PlatformCPU", "ROLLOUT_NAME", "cpu_platform_selected", "register"]
