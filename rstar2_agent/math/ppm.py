"""The process preference model (PPM): a causal LM with a value head, in upstream's saved layout.

Architecture (upstream rStar-Math): the policy LM's last hidden state goes through ``v_head`` = dropout +
``Linear(hidden, 1)``; a text's score is the head's output at its **last non-padding token**. At inference the
score is squashed to (-1, 1) by ``tanh(score / 5)`` (upstream does so; its training loss uses the raw score).

Saved layout (so a published PPM loads): the base model folder (``save_pretrained``: config + weights, and the
tokenizer) plus ``value_head.bin``, a torch state dict with keys ``v_head.summary.weight`` and
``v_head.summary.bias``. A plain model folder without ``value_head.bin`` is refused with a clear message
(upstream issue #9: a PPM has to be trained first).

:class:`PPMScorer` is the search's ``value_model``: ``score(texts) -> list[float]``, batched, padding on the
right so that a text's score does not depend on the batch it is in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["VALUE_HEAD_FILE", "ValueHead", "ProcessPreferenceModel", "PPMScorer", "inference_value"]

VALUE_HEAD_FILE = "value_head.bin"


def inference_value(score: float) -> float:
    """``tanh(score / 5)``: upstream's squashing of a raw score at inference.

    >>> round(inference_value(5.0), 4)
    0.7616
    """
    return math.tanh(score / 5.0)


class ValueHead(nn.Module):
    """Dropout then ``Linear(hidden, 1)``; initialised near zero as upstream (weights N(5e-7, 1e-6), bias 1e-6)."""

    def __init__(self, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.summary.weight, mean=5e-7, std=1e-6)
        nn.init.constant_(self.summary.bias, 1e-6)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(self.dropout(hidden.to(self.summary.weight.dtype))).squeeze(-1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-padding token (works for left or right padding).

    >>> last_token_index(torch.tensor([[1, 1, 0], [0, 1, 1]])).tolist()
    [1, 2]
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


class ProcessPreferenceModel(nn.Module):
    """``base`` (a transformers causal LM) + ``v_head``; ``forward`` returns raw scores, one per row."""

    def __init__(self, base: nn.Module, dropout: Optional[float] = None):
        super().__init__()
        self.base = base
        config = base.config
        if dropout is None:
            dropout = getattr(config, "summary_dropout_prob", None) or 0.1
        self.v_head = ValueHead(config.hidden_size, dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                        output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1]
        last = last_token_index(attention_mask)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.v_head(picked)

    # ------------------------------------------------------------------ for transformers Trainer (ppm_train)
    @property
    def _no_split_modules(self):
        """The base model's layer classes, which FSDP auto-wrap (``--fsdp "full_shard auto_wrap"``) wraps."""
        return getattr(self.base, "_no_split_modules", None)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        """``--gradient_checkpointing``: checkpoint the base model's layers."""
        self.base.gradient_checkpointing_enable(**kwargs)

    # ------------------------------------------------------------------ upstream layout
    def save_pretrained(self, path: str | Path, tokenizer=None) -> None:
        """The base model folder plus ``value_head.bin`` (keys ``v_head.*``)."""
        path = Path(path)
        self.base.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        torch.save({f"v_head.{k}": v.detach().cpu() for k, v in self.v_head.state_dict().items()},
                   path / VALUE_HEAD_FILE)

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: Optional[torch.dtype] = None,
                        device: str | torch.device = "cpu") -> "ProcessPreferenceModel":
        from transformers import AutoModelForCausalLM

        path = Path(path)
        head_file = path / VALUE_HEAD_FILE
        if not head_file.is_file():
            raise FileNotFoundError(f"{path} has no {VALUE_HEAD_FILE}: it is a plain model, not a PPM "
                                    "(train one first, or pass the policy without --reward_model_dir)")
        base = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch_dtype)
        model = cls(base)
        state = torch.load(head_file, map_location="cpu", weights_only=True)
        head = {k.removeprefix("v_head."): v for k, v in state.items()}
        model.v_head.load_state_dict(head)
        return model.to(device).eval()


class PPMScorer:
    """``score(texts)``: ``tanh(raw / 5)`` of each text, ``batch_size`` texts per forward pass."""

    def __init__(self, model: ProcessPreferenceModel, tokenizer, batch_size: int = 8, max_length: int = 2048):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.calls = 0

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "PPMScorer":
        from transformers import AutoTokenizer

        return cls(ProcessPreferenceModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), **kwargs)

    def raw_scores(self, texts: Sequence[str]) -> list[float]:
        """The head's output for each text (no squashing), in input order."""
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"][-self.max_length:] or [self.pad_id]
                   for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        scores = [0.0] * len(texts)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                width = max(len(encoded[i]) for i in rows)
                ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, i in enumerate(rows):
                    ids[j, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[j, : len(encoded[i])] = 1
                out = self.model(ids.to(device), mask.to(device)).float().cpu().tolist()
                for i, value in zip(rows, out):
                    scores[i] = value
        return scores

    def score(self, texts: list[str]) -> list[float]:
        self.calls += 1
        return [inference_value(s) for s in self.raw_scores(texts)]
