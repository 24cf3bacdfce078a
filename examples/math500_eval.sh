#!/usr/bin/env bash
# Evaluate a checkpoint on MATH-500 with the Python tool: a validation-only run of the rStar2-Agent entry point
# (upstream: the training command with trainer.val_only=True and 30k-token responses, one sample per problem).
#     bash examples/math500_eval.sh [extra Hydra overrides]
#
# Needs: the parquet (python3 data_preprocess/math500_rstar2_agent_loop.py), the code judge running (see
# examples/run_qwen3-14b_rstar2_agent_weave.sh, note 3), and MODEL_PATH in Hugging Face format (convert a
# verl checkpoint with `python3 -m verl.model_merger merge`, as in examples/aime_eval.sh).
# VAL_N defaults to 4 samples per problem (500 problems make avg@4 tight enough); VAL_N=16 for avg@16.
set -euo pipefail
# Sampled validation, not upstream's repeated greedy decode (upstream pitfall 6; see examples/eval_common.sh).
EVAL_NAME=math500
VAL_DATASETS="math500"
DEFAULT_VAL_N=4
source "$(dirname "${BASH_SOURCE[0]}")/eval_common.sh" "$@"
