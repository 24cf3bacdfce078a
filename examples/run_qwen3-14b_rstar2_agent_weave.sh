#!/usr/bin/env bash
# rStar2-Agent: GRPO-RoC training of Qwen3-14B with the Python tool, one node with 8 GPUs.
# These are the upstream release's hyper-parameters (examples/run_qwen3-14b_rstar2_agent_weave.sh), launched
# through our entry point. Extra Hydra overrides given to this script are appended, e.g.
#     bash examples/run_qwen3-14b_rstar2_agent_weave.sh trainer.total_training_steps=10
#
# Before you start:
#   1. MODEL_PATH (required, no default) must be an instruction-following checkpoint. Upstream starts from
#      Qwen3-14B-Base after its own non-reasoning instruction SFT (that data is not released); RL on the raw base
#      model does not learn the tool-call format. Users who started from an instruct model (qwen3-4b) saw the
#      number of tool calls explode after about 50 steps (microsoft/rStar#52). Its tokenizer's eos_token must
#      be the token that ends the chat template's assistant turn (<|im_end|>): Qwen3-14B-Base ships
#      <|endoftext|>, which rstar2_agent.main refuses. After your SFT on the ChatML template, set
#      "eos_token": "<|im_end|>" in the checkpoint's tokenizer_config.json.
#   2. Data (writes $DATA_DIR/dapo-math-17k-en/train.parquet and $DATA_DIR/aime2024/test.parquet):
#          python3 data_preprocess/dapo_rstar2_agent_loop.py
#          python3 data_preprocess/aime2024_rstar2_agent_loop.py
#   3. The code judge must be running before the launch, reachable from every rollout worker. One machine
#      (the tool yaml's host_addr/host_port, localhost:8088, is right):
#          rstar2-agent judge up --port 8088 --max-workers 64
#      Several machines (NNODES>1; one Redis + API on the master, workers on every node): see
#      examples/README.md, e.g.
#          REDIS_URI=redis://$MASTER_ADDR:6379 MAX_EXECUTION_TIME=4 rstar2-agent judge workers --max-workers 64
#      and set CODE_JUDGE_URL=http://$MASTER_ADDR:8088 (required when NNODES>1: localhost is a different
#      machine on every node). When CODE_JUDGE_URL is set, the script writes a copy of $TOOL_CONFIG with
#      `url: $CODE_JUDGE_URL` to $GENERATED_TOOL_CONFIG (default: next to the log file) and trains with that;
#      with several nodes it must be readable at that path on every node (a shared filesystem, like MODEL_PATH).
#      The script checks $CODE_JUDGE_URL/ping first (SKIP_JUDGE_CHECK=1 skips the check).
#   4. trainer.logger includes wandb and rollout tracing uses weave: `wandb login` (and `pip install weave`)
#      first, or override trainer.logger='["console"]' actor_rollout_ref.rollout.trace.backend=null.
#
# Numbers worth knowing: 128 prompts x rollout.n=32 = 4096 trajectories per step; GRPO-RoC keeps 16 per
# prompt (at most 2048). verl 0.9.1's V1 trainer pads each batch to a multiple of ppo_mini_batch_size x
# rollout.n, so upstream's 128 (4096) would pad the <= 2048 kept traces to 4096 with no-op samples; 64 (2048)
# gives the same single optimizer step per training step without the padding.
set -euo pipefail

PROJECT_DIR=${PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
DATA_DIR=${DATA_DIR:-$HOME/data/rstar2-agent}
MODEL_PATH=${MODEL_PATH:?set MODEL_PATH to an instruction-tuned checkpoint whose eos_token is <|im_end|> (note 1)}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/dapo-math-17k-en/train.parquet}
VAL_FILES=${VAL_FILES:-$DATA_DIR/aime2024/test.parquet}
TOOL_CONFIG=${TOOL_CONFIG:-$PROJECT_DIR/rstar2_agent/config/tool_config/python_tool_config.yaml}
NNODES=${NNODES:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
PROJECT_NAME=${PROJECT_NAME:-rstar2-agent}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen3-14b-sgl-tool-agent-verify-n32}
LOG_DIR=${LOG_DIR:-$PWD}
LOG_FILE=${LOG_FILE:-$LOG_DIR/rstar2-agent-$EXPERIMENT_NAME.log}
GENERATED_TOOL_CONFIG=${GENERATED_TOOL_CONFIG:-${LOG_FILE%.log}.tool_config.yaml}

source "$PROJECT_DIR/examples/tool_config.sh"
resolve_code_judge                           # CODE_JUDGE_URL -> a generated tool yaml (note 3); NNODES>1 needs it
source "$PROJECT_DIR/examples/preflight.sh"  # open-file limit, code judge reachable

ARGS=(
    # GRPO, no KL anywhere, clip-higher
    algorithm.adv_estimator=grpo
    algorithm.use_kl_in_reward=False
    # data: 128 prompts per step; the prompt length counts the chat template's tool block
    data.train_files="$TRAIN_FILES"
    data.val_files="$VAL_FILES"
    data.train_batch_size=128
    data.max_prompt_length=2048
    data.max_response_length=8192
    data.filter_overlong_prompts=True
    data.truncation=error
    data.return_raw_chat=True
    # model and actor (FSDP)
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.model.enable_gradient_checkpointing=True
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.optim.lr_warmup_steps=20
    actor_rollout_ref.actor.ppo_mini_batch_size=64
    actor_rollout_ref.actor.use_dynamic_bsz=True
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=20480
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.kl_loss_coef=0
    actor_rollout_ref.actor.kl_loss_type=low_var_kl
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.28
    actor_rollout_ref.actor.fsdp_config.param_offload=False
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
    # rollout: SGLang, async agent loop, 32 trajectories per prompt, traced to weave
    actor_rollout_ref.rollout.tensor_model_parallel_size=4
    actor_rollout_ref.rollout.name=sglang
    actor_rollout_ref.rollout.mode=async
    actor_rollout_ref.rollout.gpu_memory_utilization=0.8
    actor_rollout_ref.rollout.n=32
    actor_rollout_ref.rollout.trace.backend=weave
    actor_rollout_ref.rollout.trace.token2text=True
    actor_rollout_ref.rollout.agent.num_workers=1
    actor_rollout_ref.rollout.multi_turn.tool_config_path="$TOOL_CONFIG"
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True
    actor_rollout_ref.ref.fsdp_config.param_offload=True
    # GRPO-RoC: drop all-equal groups, then keep 16 of 32 per prompt (at least 2 wrong and 2 right ones),
    # preferring right answers with fewer tool errors and a clean answer format
    augmentation.do_down_sampling=True
    augmentation.down_sampling_config.reject_equal_reward=True
    augmentation.down_sampling_config.roc_error_ratio=True
    augmentation.down_sampling_config.roc_answer_format=True
    augmentation.down_sampling_config.min_zero_reward_trace_num=2
    augmentation.down_sampling_config.min_non_zero_reward_trace_num=2
    augmentation.down_sampling_config.down_sample_to_n=16
    # outcome reward (1 right / 0 wrong). Upstream spells this reward_model.reward_manager=code_judge, which
    # verl 0.9.1 keeps only as a legacy key; reward.reward_manager.name is the key its trainer reads.
    reward.reward_manager.name=code_judge
    # trainer: validate on AIME 2024 every 5 steps; save_freq=-1 (as upstream) keeps no checkpoint, so set
    # e.g. trainer.save_freq=20 to evaluate or resume later
    trainer.critic_warmup=0
    'trainer.logger=["console","wandb"]'
    trainer.project_name="$PROJECT_NAME"
    trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
    trainer.nnodes="$NNODES"
    trainer.save_freq=-1
    trainer.test_freq=5
    trainer.total_training_steps=200
    trainer.total_epochs=15
)

echo "logging to $LOG_FILE"
python3 -m rstar2_agent.main \
    --config-path="$PROJECT_DIR/rstar2_agent/config" \
    --config-name=rstar2_agent_trainer \
    "${ARGS[@]}" "$@" 2>&1 | tee "$LOG_FILE"
