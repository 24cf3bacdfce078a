"""PPM training: ``rstar2-agent math ppm`` on ``{prompt, pos, neg, pos_count, neg_count}`` preference pairs.

The model is :class:`.ppm.ProcessPreferenceModel` (causal LM + value head, upstream init), started from the SFT
policy folder (``--model_name_or_path``; upstream uses the policy as the PPM's init) or from an earlier PPM
(a folder with ``value_head.bin`` keeps its head). A text's score is the head output at its last
non-padding token, exactly as :class:`.ppm.PPMScorer` reads it in the search: the pair texts are
``prompt + pos`` and ``prompt + neg``, tokenized without added special tokens, cut on the **left** to
``max_length`` (the step and the scored last token survive a long prompt), padded on the right.

Loss (upstream's Bradley-Terry): per pair ``-logsigmoid(r_pos - r_neg) * w`` with ``w = 1/(pos_count *
neg_count)`` (``1/(pos_count + neg_count)`` when either is 0), **summed** over the batch; the scores are raw,
as upstream trains them, and the search squashes them with ``tanh(score / 5)`` only at inference (a monotone
map, so the pair ranking the loss trains is the ranking the search sees). Eval metric: pair accuracy, the
share of pairs with ``r_pos > r_neg``.

It runs on transformers ``Trainer`` (accelerate underneath), so the same command scales from the CPU to
``accelerate launch`` / ``torchrun`` on GPUs. Checkpoints and the final ``--output_dir`` are saved in the
upstream layout (model folder + ``value_head.bin``) that ``--reward_model_dir`` of the search loads.
Resuming a run from a Trainer checkpoint is not supported (the checkpoints are PPM folders: start a new run
from one instead).

The training flags (:func:`add_training_flags`) carry ``TrainingArguments``' own names, so upstream command
lines pass through; ``rstar2-agent math sft`` shares them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from rstar2_agent.math.extract import PAIR_KEYS, read_rows

__all__ = ["PPM_DEFAULTS", "pair_weight", "pairwise_loss", "encode_pairs", "PairCollator", "pair_accuracy",
           "load_ppm_init", "build_trainer", "train_ppm", "evaluate_pairs", "add_training_flags",
           "training_arguments", "add_command"]

# upstream's RM run (section 10.3): lr 7e-6, 2 epochs, per-device batch 16, GA 4, max_length 2048,
# eval/save every 750 steps, bf16 (turned on with --bf16 here, so the CPU default works)
PPM_DEFAULTS = {"learning_rate": 7e-6, "num_train_epochs": 2.0, "per_device_train_batch_size": 16,
                "gradient_accumulation_steps": 4, "weight_decay": 0.0, "warmup_steps": 0.0,
                "lr_scheduler_type": "linear", "max_length": 2048, "eval_steps": 750, "save_steps": 750,
                "logging_steps": 10, "seed": 42}


# ---------------------------------------------------------------------- loss

def pair_weight(pos_count: int, neg_count: int) -> float:
    """Upstream's per-pair factor: ``1/(pos_count*neg_count)``, or ``1/(pos_count+neg_count)`` when one is 0.

    >>> pair_weight(2, 2), pair_weight(1, 4), pair_weight(0, 4)
    (0.25, 0.25, 0.25)
    """
    if pos_count * neg_count:
        return 1.0 / (pos_count * neg_count)
    return 1.0 / max(pos_count + neg_count, 1)


def pairwise_loss(r_pos: torch.Tensor, r_neg: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(-logsigmoid(r_pos - r_neg) * weights)``.

    >>> round(float(pairwise_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.0]))), 4)
    0.6931
    """
    return -(F.logsigmoid(r_pos.float() - r_neg.float()) * weights.float()).sum()


def pair_accuracy(r_pos: Sequence[float], r_neg: Sequence[float]) -> float:
    """Share of pairs whose positive step scores strictly higher.

    >>> pair_accuracy([1.0, 0.0, 2.0], [0.0, 0.0, 3.0])
    0.3333333333333333
    """
    pairs = list(zip(r_pos, r_neg, strict=True))
    return sum(p > n for p, n in pairs) / len(pairs) if pairs else 0.0


# ---------------------------------------------------------------------- data

def _encode(tokenizer, text: str, max_length: int) -> list[int]:
    """The ids of ``text`` as the scorer sees them: no added special tokens, the last ``max_length`` kept."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:] or [pad]


def encode_pairs(rows: Sequence[dict], tokenizer, max_length: int = 2048) -> list[dict]:
    """Each pair as ``{pos_ids, neg_ids, weight}`` (texts ``prompt + pos`` / ``prompt + neg``)."""
    return [{"pos_ids": _encode(tokenizer, r["prompt"] + r["pos"], max_length),
             "neg_ids": _encode(tokenizer, r["prompt"] + r["neg"], max_length),
             "weight": pair_weight(int(r["pos_count"]), int(r["neg_count"]))} for r in rows]


class PairCollator:
    """A batch of B encoded pairs as 2B right-padded rows (positives first) plus the B weights."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [f["pos_ids"] for f in features] + [f["neg_ids"] for f in features]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "weights": torch.tensor([f["weight"] for f in features], dtype=torch.float)}


# ---------------------------------------------------------------------- model

def load_ppm_init(path: str | Path, add_tokens: bool = True):
    """(PPM, tokenizer) to train from ``path``: a PPM folder keeps its head, a policy folder gets a fresh one
    (upstream init). ``add_tokens`` adds upstream's step-format special tokens that are missing (resizing the
    embeddings), as upstream's RM script does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rstar2_agent.math.ppm import VALUE_HEAD_FILE, ProcessPreferenceModel
    from rstar2_agent.math.sft import PPM_TOKENS, add_special_tokens

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if (path / VALUE_HEAD_FILE).is_file():
        model = ProcessPreferenceModel.from_pretrained(path)
    else:
        model = ProcessPreferenceModel(AutoModelForCausalLM.from_pretrained(path))
    if add_tokens:
        add_special_tokens(tokenizer, model.base, PPM_TOKENS)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.train(), tokenizer


def _ppm_trainer_class():
    from transformers import Trainer

    class PPMTrainer(Trainer):
        """Trainer with the pairwise loss, pair accuracy at eval, and the upstream save layout.

        The PPM's ``forward`` takes no loss kwargs, so Trainer divides the loss by the gradient accumulation
        steps itself (each micro-batch's weighted sum counts 1/GA, as in upstream's accelerate loop).
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            scores = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            half = scores.shape[0] // 2
            loss = pairwise_loss(scores[:half], scores[half:], inputs["weights"])
            return (loss, torch.stack([scores[:half], scores[half:]], dim=-1)) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss, pair_scores = self.compute_loss(model, inputs, return_outputs=True)
            labels = torch.zeros((pair_scores.shape[0], 1), device=pair_scores.device)
            return loss.detach(), pair_scores.detach().float(), labels

        def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
            output_dir = output_dir or self.args.output_dir
            model = self.accelerator.unwrap_model(self.model)
            save_ppm(model, output_dir, self.processing_class, state_dict)

    return PPMTrainer


def save_ppm(model, output_dir: str | Path, tokenizer=None, state_dict: Optional[dict] = None) -> None:
    """The upstream layout; with a gathered ``state_dict`` (FSDP / DeepSpeed), its ``base.*``/``v_head.*`` parts."""
    from rstar2_agent.math.ppm import VALUE_HEAD_FILE

    output_dir = Path(output_dir)
    if state_dict is None:
        model.save_pretrained(output_dir, tokenizer=tokenizer)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    model.base.save_pretrained(output_dir, state_dict={k[5:]: v for k, v in state_dict.items()
                                                       if k.startswith("base.")})
    torch.save({k: v.detach().cpu() for k, v in state_dict.items() if k.startswith("v_head.")},
               output_dir / VALUE_HEAD_FILE)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)


def _accuracy_metric(prediction) -> dict[str, float]:
    scores = prediction.predictions
    return {"accuracy": pair_accuracy(scores[:, 0].tolist(), scores[:, 1].tolist())}


def build_trainer(model, tokenizer, train_rows: Sequence[dict], args, eval_rows: Optional[Sequence[dict]] = None,
                  max_length: int = 2048):
    """A ``Trainer`` for the PPM on these pairs (``args``: ``TrainingArguments``)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return _ppm_trainer_class()(
        model=model, args=args, train_dataset=encode_pairs(train_rows, tokenizer, max_length),
        eval_dataset=encode_pairs(eval_rows, tokenizer, max_length) if eval_rows else None,
        data_collator=PairCollator(pad), processing_class=tokenizer, compute_metrics=_accuracy_metric)


def evaluate_pairs(scorer, rows: Sequence[dict]) -> dict[str, float]:
    """Pair accuracy and mean weighted loss of a :class:`.ppm.PPMScorer` (e.g. a saved PPM) on ``rows``."""
    pos = scorer.raw_scores([r["prompt"] + r["pos"] for r in rows])
    neg = scorer.raw_scores([r["prompt"] + r["neg"] for r in rows])
    weights = torch.tensor([pair_weight(int(r["pos_count"]), int(r["neg_count"])) for r in rows])
    loss = float(pairwise_loss(torch.tensor(pos), torch.tensor(neg), weights)) / max(len(rows), 1)
    return {"pairs": len(rows), "accuracy": pair_accuracy(pos, neg), "loss": loss}


def train_ppm(model_dir: str | Path, train_file: str | Path, args, eval_file: Optional[str | Path] = None,
              max_length: int = 2048, add_tokens: bool = True) -> dict[str, Any]:
    """Train a PPM from ``model_dir`` on a pairs file, save it to ``args.output_dir``; the final metrics."""
    train_rows = read_rows(train_file, PAIR_KEYS)
    eval_rows = read_rows(eval_file, PAIR_KEYS) if eval_file else None
    model, tokenizer = load_ppm_init(model_dir, add_tokens)
    trainer = build_trainer(model, tokenizer, train_rows, args, eval_rows, max_length)
    result = trainer.train()
    trainer.save_model(args.output_dir)
    metrics = {"train_loss": result.training_loss, "steps": result.global_step, "pairs": len(train_rows)}
    if eval_rows:
        metrics.update(trainer.evaluate())
    if trainer.is_world_process_zero():
        Path(args.output_dir, "ppm_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# ---------------------------------------------------------------------- flags shared with `math sft`

def add_training_flags(p, defaults: dict) -> None:
    """``TrainingArguments`` flags under their own names (upstream scripts' flags pass through)."""
    d = defaults
    p.add_argument("--model_name_or_path", "--model", dest="model_name_or_path", required=True,
                   help="the model folder to start from")
    p.add_argument("--train_file", "--data_path", dest="train_file", required=True, help="JSON list or JSONL")
    p.add_argument("--eval_file", default=None, help="held-out rows, evaluated every --eval_steps and at the end")
    p.add_argument("--output_dir", required=True, help="where the trained model (and checkpoints) go")
    p.add_argument("--learning_rate", type=float, default=d["learning_rate"])
    p.add_argument("--num_train_epochs", type=float, default=d["num_train_epochs"])
    p.add_argument("--max_steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs)")
    p.add_argument("--per_device_train_batch_size", type=int, default=d["per_device_train_batch_size"])
    p.add_argument("--per_device_eval_batch_size", type=int, default=None, help="default: the train batch size")
    p.add_argument("--gradient_accumulation_steps", type=int, default=d["gradient_accumulation_steps"])
    p.add_argument("--weight_decay", type=float, default=d["weight_decay"])
    p.add_argument("--warmup_steps", "--warmup_ratio", dest="warmup_steps", type=float, default=d["warmup_steps"],
                   help="warm-up steps, or a ratio of the run when < 1")
    p.add_argument("--lr_scheduler_type", default=d["lr_scheduler_type"], help="linear, cosine, constant, ...")
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--max_length", "--model_max_length", dest="max_length", type=int, default=d["max_length"],
                   help="tokens per sequence")
    p.add_argument("--logging_steps", type=float, default=d["logging_steps"])
    p.add_argument("--eval_steps", type=float, default=d["eval_steps"])
    p.add_argument("--save_steps", type=float, default=d["save_steps"])
    p.add_argument("--save_strategy", default="steps", choices=["no", "steps", "epoch"])
    p.add_argument("--save_total_limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--fsdp", default="", help='e.g. "full_shard auto_wrap" (multi-GPU, under accelerate/torchrun)')
    p.add_argument("--fsdp_config", default=None, help="FSDP config JSON file")
    p.add_argument("--report_to", default="none", help="none, wandb, tensorboard, ...")
    p.add_argument("--no_special_tokens", action="store_true", help="do not add upstream's step-format tokens")


def training_arguments(args, **overrides):
    """``TrainingArguments`` from the parsed flags (eval only when an eval file is given)."""
    from transformers import TrainingArguments

    kwargs = dict(output_dir=args.output_dir, learning_rate=args.learning_rate,
                  num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
                  per_device_train_batch_size=args.per_device_train_batch_size,
                  per_device_eval_batch_size=args.per_device_eval_batch_size or args.per_device_train_batch_size,
                  gradient_accumulation_steps=args.gradient_accumulation_steps, weight_decay=args.weight_decay,
                  warmup_steps=args.warmup_steps, lr_scheduler_type=args.lr_scheduler_type,
                  max_grad_norm=args.max_grad_norm, bf16=args.bf16,
                  gradient_checkpointing=args.gradient_checkpointing, logging_steps=args.logging_steps,
                  eval_strategy="steps" if args.eval_file else "no", eval_steps=args.eval_steps,
                  save_strategy=args.save_strategy, save_steps=args.save_steps,
                  save_total_limit=args.save_total_limit, seed=args.seed, data_seed=args.seed,
                  fsdp=args.fsdp or "", fsdp_config=args.fsdp_config, report_to=args.report_to,
                  remove_unused_columns=False, dataloader_pin_memory=torch.cuda.is_available(),
                  disable_tqdm=not os.isatty(2))
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def run_ppm_command(args) -> None:
    try:
        metrics = train_ppm(args.model_name_or_path, args.train_file, training_arguments(args), args.eval_file,
                            args.max_length, add_tokens=not args.no_special_tokens)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                      for k, v in metrics.items()}))
    print(f"saved the PPM (model folder + value_head.bin) to {args.output_dir}")


def add_command(commands) -> None:
    """``ppm`` under ``rstar2-agent math``."""
    p = commands.add_parser("ppm", help="train the process preference model on preference pairs",
                            description="Causal LM + value head, pairwise loss weighted 1/(pos_count*neg_count); "
                                        "saved as model folder + value_head.bin.")
    add_training_flags(p, PPM_DEFAULTS)
    p.set_defaults(func=run_ppm_command)
