"""From a scored rollout, in plain lists, to the rows GRPO-RoC keeps. No verl trainer or TransferQueue here.

verl's V1 trainer keeps a step's samples in TransferQueue and passes the trainer only their keys; the trainer
subclass (`roc_trainer.py`) fetches these fields for the keys and asks `rows_to_keep` which to keep:

    uids       ["p", "p", "q", "q"]                 the prompt group of each trace
    prompts    [[ids...], ...]                      prompt token ids, unpadded
    responses  [[ids...], ...]                      response token ids, unpadded
    scores     [[0.0, ..., 1.0], ...]               token-level reward (rm_scores); a trace's reward is its sum

It builds the `DataProto` that `rstar2_agent.down_sample.down_sample_batch` works on (prompt and response
right-padded, attention mask from the lengths) with each row's position attached, so the kept positions can
be mapped back to TransferQueue keys. World-size divisibility is left to verl, which pads the batch with
padding sequences right after this step (`_balance_batch`), so whole groups are never dropped for it here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from rstar2_agent.down_sample.batch import DownSamplingConfig, down_sample_batch


def _pad(rows: Sequence[Sequence[float]], dtype, pad, width: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or cut) rows to `width` (default: the longest row); returns the tensor and its mask."""
    width = width or max(1, max((len(r) for r in rows), default=0))
    out = torch.full((len(rows), width), pad, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        r = list(r)[:width]
        out[i, : len(r)] = torch.as_tensor(r, dtype=dtype)
        mask[i, : len(r)] = 1
    return out, mask


def build_batch(uids: Sequence[str], prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                scores: Sequence[Sequence[float]], pad_token_id: int):
    from tensordict import TensorDict
    from verl.protocol import DataProto

    prompt_ids, prompt_mask = _pad(prompts, torch.long, pad_token_id)
    response_ids, response_mask = _pad(responses, torch.long, pad_token_id)
    token_scores, _ = _pad(scores, torch.float32, 0.0, width=response_ids.shape[1])
    tensors = TensorDict({"prompts": prompt_ids, "responses": response_ids,
                          "attention_mask": torch.cat([prompt_mask, response_mask], dim=1),
                          "token_level_scores": token_scores}, batch_size=len(uids))
    non_tensors = {"uid": np.array(list(uids), dtype=object), "row": np.arange(len(uids))}
    return DataProto(batch=tensors, non_tensor_batch=non_tensors)


def rows_to_keep(uids, prompts, responses, scores, tokenizer,
                 cfg: DownSamplingConfig) -> tuple[Optional[list[int]], dict[str, float]]:
    """Positions (in input order) that GRPO-RoC keeps, or None when nothing is left; plus the metrics."""
    batch = build_batch(uids, prompts, responses, scores, tokenizer.pad_token_id)
    kept, metrics = down_sample_batch(batch, tokenizer, cfg, world_size=1)
    if kept is None:
        return None, metrics
    return [int(i) for i in kept.non_tensor_batch["row"]], metrics
