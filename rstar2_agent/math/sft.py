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

__all__ = ["PPM_TOKENS", "SFT_TOKENS", "SFT_DEFAULTS", "add_special_tokens", "encode_example", "encode_rows",
           "SFTCollator", "load_policy", "train_sft", "add_command"]

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


def encode_example(tokenizer, query: str, response: str, max_length: int = 2048,
                   template: str = SFT_PROMPT) -> Optional[dict]:
    """``{input_ids, labels}`` of one row: prompt ids (labels -100), then response ids + EOS (labels = ids).

    The prompt and the response are tokenized apart, as the search tokenizes the prompt and the policy then
    generates the response after it; no special tokens are added around them (the search adds none either).
    Cut on the right to ``max_length``; None when no response token is left to learn from.
    """
    prompt_ids = tokenizer(question_prompt(query, template), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    if len(ids) <= len(prompt_ids):
        return None
    return {"input_ids": ids, "labels": [-100] * len(prompt_ids) + ids[len(prompt_ids):]}


def encode_rows(rows: Sequence[dict], tokenizer, max_length: int = 2048, template: str = SFT_PROMPT) -> list[dict]:
    """Every row encoded (:func:`encode_example`); rows whose prompt fills ``max_length`` are left out."""
    encoded = [encode_example(tokenizer, str(r["query"]), str(r["response"]), max_length, template) for r in rows]
    return [e for e in encoded if e is not None]


class SFTCollator:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (-100 on padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(f["labels"], dtype=torch.long)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def load_policy(path: str | Path, add_tokens: bool = True):
    """(causal LM, tokenizer) from a model folder, upstream's SFT tokens added when missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    if add_tokens:
        add_special_tokens(tokenizer, model, SFT_TOKENS)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def train_sft(model_dir: str | Path, train_file: str | Path, args, eval_file: Optional[str | Path] = None,
              max_length: int = 2048, add_tokens: bool = True, template: str = SFT_PROMPT) -> dict:
    """SFT of the policy at ``model_dir`` on a ``{query, response}`` file; saved to ``args.output_dir``."""
    from transformers import Trainer

    from rstar2_agent.math.extract import SFT_KEYS, read_rows

    train_rows = read_rows(train_file, SFT_KEYS)
    eval_rows = read_rows(eval_file, SFT_KEYS) if eval_file else None
    model, tokenizer = load_policy(model_dir, add_tokens)
    train_set = encode_rows(train_rows, tokenizer, max_length, template)
    if not train_set:
        raise ValueError(f"{train_file}: no row has a response token within max_length {max_length}")
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      eval_dataset=encode_rows(eval_rows, tokenizer, max_length, template) if eval_rows else None,
                      data_collator=SFTCollator(tokenizer.pad_token_id), processing_class=tokenizer)
    result = trainer.train()
    trainer.save_model(args.output_dir)
    metrics = {"train_loss": result.training_loss, "steps": result.global_step, "examples": len(train_set),
               "skipped": len(train_rows) - len(train_set)}
    if eval_rows:
        metrics.update(trainer.evaluate())
    if trainer.is_world_process_zero():
        Path(args.output_dir, "sft_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_sft_command(args) -> None:
    from rstar2_agent.math.ppm_train import training_arguments
    from rstar2_agent.math.prompts import load_template

    try:
        metrics = train_sft(args.model_name_or_path, args.train_file, training_arguments(args), args.eval_file,
                            args.max_length, add_tokens=not args.no_special_tokens,
                            template=load_template(args.prompt_path))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps(metrics))
    print(f"saved the policy to {args.output_dir}")


def add_command(commands) -> None:
    """``sft`` under ``rstar2-agent math``."""
    from rstar2_agent.math.ppm_train import add_training_flags

    p = commands.add_parser("sft", help="supervised fine-tuning of the policy on {query, response} rows",
                            description="Upstream's SFT prompt, loss on the response only, Trainer flags.")
    add_training_flags(p, SFT_DEFAULTS)
    p.add_argument("--prompt_path", default=None, help="a prompt file with 'prompt_input' (default: upstream SFT)")
    p.set_defaults(func=run_sft_command)
