#!/usr/bin/env bash
# Shared body of the evaluation scripts (aime_eval.sh, math500_eval.sh), which set EVAL_NAME, VAL_DATASETS
# (folders under DATA_DIR holding test.parquet) and DEFAULT_VAL_N, then source this file with their arguments.
#
# Why sampling: verl's validation defaults are greedy (val_kwargs.temperature=0, do_sample=False). Upstream's
# evaluation set val_kwargs.n=16 but left those defaults, so its 16 "samples" per problem were one greedy
# decode repeated (upstream pitfall 6) and the average over them was plain greedy accuracy. Here each
# sample is drawn at temperature 0.6, top-p 0.95 (Qwen3's recommended reasoning settings), so
# val-core/<data_source>/acc/mean@N is a real avg@N. (best@N and maj@N are bootstrap estimates on top.)
set -euo pipefail

PROJECT_DIR=${PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
DATA_DIR=${DATA_DIR:-$HOME/data/rstar2-agent}
MODEL_PATH=${MODEL_PATH:-$HOME/models/rstar2-agent-qwen3-14b}  # a Hugging Face-format checkpoint
TOOL_CONFIG=${TOOL_CONFIG:-$PROJECT_DIR/rstar2_agent/config/tool_config/python_tool_config.yaml}
NNODES=${NNODES:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
VAL_N=${VAL_N:-$DEFAULT_VAL_N}
VAL_TEMPERATURE=${VAL_TEMPERATURE:-0.6}
VAL_TOP_P=${VAL_TOP_P:-0.95}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-30720}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-$EVAL_NAME-eval-n$VAL_N}
OUTPUT_DIR=${OUTPUT_DIR:-$PWD/outputs/$EXPERIMENT_NAME}
LOG_FILE=${LOG_FILE:-$OUTPUT_DIR/$EXPERIMENT_NAME.log}
GENERATED_TOOL_CONFIG=${GENERATED_TOOL_CONFIG:-$OUTPUT_DIR/tool_config.yaml}

source "$PROJECT_DIR/examples/tool_config.sh"
resolve_code_judge                           # CODE_JUDGE_URL -> a generated tool yaml; NNODES>1 needs it
source "$PROJECT_DIR/examples/preflight.sh"  # open-file limit, code judge reachable
mkdir -p "$OUTPUT_DIR"

if [[ -z "${VAL_FILES:-}" ]]; then
    VAL_FILES=""
    for dataset in $VAL_DATASETS; do VAL_FILES+="${VAL_FILES:+,}'$DATA_DIR/$dataset/test.parquet'"; done
    VAL_FILES="[$VAL_FILES]"
fi

ARGS=(
    # evaluation only: validate once before (instead of) training
    trainer.val_only=True
    trainer.val_before_train=True
    # verl builds a train dataloader even with val_only: point it at the evaluation files, with a batch
    # size they can fill, so that no training data is needed
    data.train_files="$VAL_FILES"
    data.val_files="$VAL_FILES"
    data.train_batch_size=16
    actor_rollout_ref.actor.ppo_mini_batch_size=16
    data.max_prompt_length=2048
    data.max_response_length="$MAX_RESPONSE_LENGTH"
    data.filter_overlong_prompts=True
    data.truncation=error
    data.return_raw_chat=True
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.actor.use_dynamic_bsz=True
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=32768
    # nothing is trained: keep the FSDP copy off the GPUs, leaving them to SGLang's KV cache
    actor_rollout_ref.actor.fsdp_config.param_offload=True
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=True
    actor_rollout_ref.rollout.tensor_model_parallel_size=4
    actor_rollout_ref.rollout.name=sglang
    actor_rollout_ref.rollout.mode=async
    actor_rollout_ref.rollout.gpu_memory_utilization=0.8
    actor_rollout_ref.rollout.agent.num_workers=1
    actor_rollout_ref.rollout.multi_turn.tool_config_path="$TOOL_CONFIG"
    # sampled validation, VAL_N samples per problem (see the note at the top)
    actor_rollout_ref.rollout.val_kwargs.do_sample=True
    actor_rollout_ref.rollout.val_kwargs.temperature="$VAL_TEMPERATURE"
    actor_rollout_ref.rollout.val_kwargs.top_p="$VAL_TOP_P"
    actor_rollout_ref.rollout.val_kwargs.n="$VAL_N"
    reward.reward_manager.name=code_judge
    'trainer.logger=["console"]'
    trainer.project_name=rstar2-agent
    trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
    trainer.nnodes="$NNODES"
    trainer.log_val_generations=10
    trainer.validation_data_dir="$OUTPUT_DIR/generations"
)

echo "logging to $LOG_FILE"
python3 -m rstar2_agent.main \
    --config-path="$PROJECT_DIR/rstar2_agent/config" \
    --config-name=rstar2_agent_trainer \
    "${ARGS[@]}" "$@" 2>&1 | tee "$LOG_FILE"
