"""Typed config of the CPU engine (`rstar2-agent train`), composed with Hydra like the GPU trainer.

The keys mirror verl's trainer config wherever the concept is the same (`data.train_batch_size`,
`actor_rollout_ref.rollout.n`, `actor_rollout_ref.actor.optim.lr`, `augmentation.*`, `trainer.total_training_steps`
...), so an override means the same thing on both paths. The dataclasses below are the single source of the
defaults; they are stored in Hydra's ConfigStore as `cpu_trainer`, and presets are yaml files next to the GPU
config that start from it (`rstar2_agent/config/cpu_trainer_tiny.yaml`):

    cfg = compose("cpu_trainer", ["trainer.total_training_steps=2", "actor_rollout_ref.rollout.n=4"])
    cfg.actor_rollout_ref.rollout.n          # 4

The default preset fits 2 cores and 24 GiB: 8 prompts x 8 samples per step (4 to 6 minutes on 2 cores), RoC down
to 4 per group, responses up to 256 tokens, 3 assistant turns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from importlib import resources
from typing import Any, Optional

CPU_CONFIGS = ("cpu_trainer", "cpu_trainer_tiny")

# The CPU default model cannot read a tool schema from the system prompt; a short one with one worked call does.
DEFAULT_SYSTEM_PROMPT = (
    "Solve the math problem with Python. Run Python code by writing a tool call exactly like this:\n"
    "<tool_call>\n"
    '{"name": "python_code_with_standard_io", "arguments": {"code": "print(12 * 7)", "input": ""}}\n'
    "</tool_call>\n"
    "The result comes back inside <tool_response> </tool_response>. Then write the final answer like \\boxed{84}."
)


@dataclasses.dataclass
class DataConfig:
    train_files: str = "bundled"  # "bundled" (rstar2_agent/data/math_tasks_train.jsonl) or a verl parquet/jsonl
    val_files: str = "bundled"  # "bundled" (the held-out math_tasks_test.jsonl) or a verl parquet/jsonl
    train_batch_size: int = 8  # prompts per step
    val_size: int = 40  # validation problems (the first ones; <= 0: all)
    max_prompt_length: int = 512
    max_response_length: int = 256  # one budget for the whole trajectory, tool turns included
    system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT  # null: the chat template's own, with the tool schema
    shuffle: bool = True


@dataclasses.dataclass
class ModelConfig:
    path: str = "default"  # "default" (SmolLM2-135M-Instruct), "tiny" (built in-process) or a HF model folder
    custom_chat_template: Optional[str] = None  # a jinja file; null: rstar2_agent/config/chat_template.jinja


@dataclasses.dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.0


@dataclasses.dataclass
class ActorConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.28  # clip-higher, as in rStar2-Agent
    grad_clip: float = 1.0
    ppo_micro_batch_size_per_gpu: int = 4  # sequences per forward/backward


@dataclasses.dataclass
class MultiTurnConfig:
    max_assistant_turns: int = 3
    max_parallel_calls: int = 1
    max_tool_response_length: int = 256
    tool_response_truncate_side: str = "middle"


@dataclasses.dataclass
class ValKwargs:
    # Sampled, as rStar2-Agent evaluates (greedy decoding makes a small model loop). The transformers generator
    # seeds each request from (trainer.seed, its id, its input length), and a validation's ids are the same every
    # time, so before/after compare the policy, not the dice, whatever the batching (vLLM: one seeded stream).
    temperature: float = 0.6
    n: int = 1


@dataclasses.dataclass
class RolloutConfig:
    name: str = "auto"  # generator: auto (vLLM where it imports and takes the model, else hf), hf, vllm
    n: int = 8  # samples per prompt (oversampled; RoC keeps `augmentation.down_sampling_config.down_sample_to_n`)
    temperature: float = 0.8
    top_p: float = 1.0
    max_num_seqs: int = 32  # sequences generated together in one batch
    multi_turn: MultiTurnConfig = field(default_factory=MultiTurnConfig)
    val_kwargs: ValKwargs = field(default_factory=ValKwargs)


@dataclasses.dataclass
class ActorRolloutRefConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


@dataclasses.dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"
    norm_adv_by_std_in_grpo: bool = True


@dataclasses.dataclass
class DownSamplingKeys:
    down_sample_to_n: int = 4
    reject_equal_reward: bool = True
    roc_error_ratio: bool = True
    roc_answer_format: bool = True
    min_zero_reward_trace_num: int = 1
    min_non_zero_reward_trace_num: int = 1


@dataclasses.dataclass
class AugmentationConfig:
    do_down_sampling: bool = True
    down_sampling_config: DownSamplingKeys = field(default_factory=DownSamplingKeys)


@dataclasses.dataclass
class ColdStartConfig:
    """rStar2-Agent starts RL from a short non-reasoning SFT that teaches the tool-call and answer format; a
    135M model needs it too (prompted alone it writes no tool call at all). Demonstrations are built from the
    train split's reference programs and run through the same agent loop and code judge."""

    # Deliberately short: 5 steps leave SmolLM2-135M at about half the held-out problems (4 steps: an eighth,
    # 8 steps: nine tenths), so RL has room to show what it adds.
    steps: int = 5  # optimizer steps; 0 skips the cold start
    batch_size: int = 8
    lr: float = 5e-5
    examples: int = 64  # distinct train problems demonstrated
    families: list[str] = field(default_factory=list)  # demonstrate only these task families; empty: all


@dataclasses.dataclass
class CodeJudgeSettings:
    url: Optional[str] = None  # null: start a private code judge (Redis on 127.0.0.1) for the run
    workers: int = 2  # worker processes of the private judge


@dataclasses.dataclass
class RewardSettings:
    # reward-pool processes (ours: verl's `reward.num_workers` counts reward-loop workers, each with its own pool)
    pool_workers: int = 1
    timeout_s: float = 10.0  # per answer; a check that runs longer scores 0.0 and its process is replaced


@dataclasses.dataclass
class TrainerConfig:
    engine: str = "cpu"  # this config runs the in-process CPU engine (rstar2_agent/engine)
    total_training_steps: int = 4
    test_freq: int = 2  # validate every N steps (and at the end); <= 0: only at the end
    val_before_train: bool = True
    save_freq: int = 2  # checkpoint every N steps (and at the end); <= 0: only at the end
    # the newest N checkpoints stay on disk (about 1.6 GB each for SmolLM2-135M); null or <= 0: all (verl's null)
    max_actor_ckpt_to_keep: Optional[int] = 2
    default_local_dir: str = "runs/rstar2-agent-cpu"
    project_name: str = "rstar2-agent"
    experiment_name: str = "cpu"
    # ours: console (one line per step), jsonl (run_dir/metrics.jsonl); any other name goes to verl's Tracking
    # (wandb, offline by default; tensorboard, mlflow, swanlab, file, ...), its files in the run directory
    logger: list[str] = field(default_factory=lambda: ["console", "jsonl", "wandb"])
    seed: int = 1
    threads: int = 0  # torch threads; 0: the usable cores + 2 (see trainer.set_threads)
    progress: bool = True  # progress bars per phase


@dataclasses.dataclass
class CPUTrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    code_judge: CodeJudgeSettings = field(default_factory=CodeJudgeSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def config_dir() -> str:
    return str(resources.files("rstar2_agent.config"))


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="cpu_trainer", node=CPUTrainConfig)


def compose(config_name: str = "cpu_trainer", overrides: Optional[list[str]] = None) -> Any:
    """The composed, type-checked config (an OmegaConf DictConfig over CPUTrainConfig)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
