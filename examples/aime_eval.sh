#!/usr/bin/env bash
# Evaluate a checkpoint on AIME 2024 + AIME 2025 (avg@16) with the Python tool: a validation-only run of the
# rStar2-Agent entry point (upstream: the training command with trainer.val_only=True and 30k-token responses).
#     bash examples/aime_eval.sh [extra Hydra overrides]
#
# Needs: the two parquets (python3 data_preprocess/aime2024_rstar2_agent_loop.py and
# python3 data_preprocess/aime2025_rstar2_agent_loop.py), the code judge running (see
# examples/run_qwen3-14b_rstar2_agent_weave.sh, note 3), and MODEL_PATH in Hugging Face format. A verl
# checkpoint from training is converted first:
#     python3 -m verl.model_merger merge --backend fsdp \
#         --local_dir checkpoints/rstar2-agent/<experiment>/global_step_<N>/actor --target_dir "$MODEL_PATH"
set -euo pipefail
# Sampled validation, not upstream's repeated greedy decode (upstream pitfall 6; see examples/eval_common.sh): avg@16 by default.
EVAL_NAME=aime
VAL_DATASETS="aime2024 aime2025"
DEFAULT_VAL_N=16
source "$(dirname "${BASH_SOURCE[0]}")/eval_common.sh" "$@"
