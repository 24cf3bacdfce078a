"""Policy SFT: ``rstar2-agent math sft`` on ``{query, response}`` rows (``extract-sft`` output, or upstream's).

Each row becomes ``question_prompt(query) + response`` (:mod:`.prompts`: upstream's SFT prompt,
``<|user|>:\\n{query}\\n<|assistant|>: Let's think step by step and solve the problem with code.``, the
response appended directly, as the search appends the steps) followed by EOS. The loss is on the response
(and EOS) only: the prompt tokens' labels are -100. Upstream's step-format special tokens are added to the
tokenizer when missing (:data:`SFT_TOKENS`), and the embeddings resized, as upstream's ``train_SFT.py`` does.

Training is transformers ``Trainer`` with the flags of :func:`.ppm_train.add_training_flags` (upstream's
``TrainingArguments`` names: lr, epochs, batch, gradient accumulation, weight decay, schedule, bf16,
``--fsdp ...``), so the command line of an 8-GPU upstream run passes through under ``accelerate launch`` /
``torchrun``, and the same command trains the tiny or default model on CPU. The saved folder is a plain
causal LM folder (model + tokenizer) that the search backends load (``--model_dir``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from rstar2_agent.math.prompts import SFT_PROMPT, question_prompt

__all__ = ["PPM_TOKENS", "SFT_TOKENS", "SFT_DEFAULTS", "add_special_tokens", "encode_example", "SFTCollator",
           "train_sft", "add_command"]

# upstream's step-format tokens (section 10.3): the PPM adds these, the SFT script these plus three more
PPM_TOKENS = ("<code>", "<end_of_step>", "<end_of_code>", "<output>", "<end_of_output>", "<answer>",
              "<end_of_answer>", "<|user|>", "<|assistant|>", "<refine>", "<end_of_refine>", "\n<|assistant|>")
SFT_TOKENS = PPM_TOKENS + ("<error_info>", "<end_of_error_info>", "<BACK>")

# upstream's README run: lr 7e-6, 2 epochs, per-device batch 4 (x 8 GPUs), GA 4, weight decay 0.1, linear
SFT_DEFAULTS = {"learning_rate": 7e-6, "num_train_epochs": 2.0, "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 4, "weight_decay": 0.1, "warmup_steps": 0.0,
                "lr_scheduler_type": "linear", "max_length": 2048, "eval_steps": 500, "save_steps": 500,
                "logging_steps": 10, "seed": 42}


def add_special_tokens(tokenizer, model, tokens: Sequence[str]) -> int:
    """Add the ``tokens`` the tokenizer lacks as special tokens; grow the embeddings if they no longer fit.

    Returns how many were added (0 for a model trained with them already, e.g. a policy after our SFT).
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    added = tokenizer.add_tokens(missing, special_tokens=True) if missing else 0
    if added and model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return added
