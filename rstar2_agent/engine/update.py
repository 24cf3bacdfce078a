"""The GRPO policy update of the CPU engine, on verl's own algorithm code (advantage, clipped policy loss).

The GPU path gets the same math from verl's trainer; here it runs in-process on a transformers model.
Shapes, for B trajectories whose longest prompt+response is L tokens and longest response R tokens:

    collate(rollouts)            input_ids [B, L] (right-padded prompt+response), attention_mask [B, L],
                                 response_tokens [B, R], response_positions [B, R], response_mask [B, R]
    response_logprobs(model, b, T)  [B, R]  log p(token | prefix) of each response token, from logits / T
    grpo_advantages(b, ...)      [B, R]  verl's compute_grpo_outcome_advantage (one scalar per trajectory,
                                         normalised within its uid group, spread over its response tokens)
    policy_step(...)             one optimizer step on verl's compute_policy_loss_vanilla (clip-higher,
                                 dual-clip, token-mean)

The log-probs are those of the distribution the rollout sampled from: the logits are divided by the rollout
temperature, as verl's actor does (`verl/workers/engine/fsdp/transformer_impl.py`), so at T=0.8 the loss sees
p(token) of softmax(logits / 0.8), not of softmax(logits).

One rollout, one optimizer step, on-policy: the old log-probs are the current ones, detached, so the PPO ratio
is 1, the clip never acts (`pg_clipfrac` and `ppo_kl` are 0) and the step is REINFORCE with group-normalised
advantages (the gradient of the clipped loss at ratio 1). verl's GPU trainer computes the old log-probs in a
separate pass and can take several mini-batch steps per rollout (`ppo_mini_batch_size`, `ppo_epochs`), where
the clip does act; the CPU engine does not split a rollout.

`response_mask` is the agent loop's loss mask (tool-output tokens 0) times the padding mask, so tool
outputs and padding never contribute to the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch


@dataclasses.dataclass
class Rollout:
    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]  # 1 = model token, 0 = tool output
    reward: float
    uid: str  # the prompt group


@dataclasses.dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_tokens: torch.Tensor
    response_positions: torch.Tensor
    response_mask: torch.Tensor
    rewards: torch.Tensor
    uids: np.ndarray

    def rows(self, sl: slice) -> "Batch":
        """The same batch cut to rows `sl` (a micro-batch)."""
        return Batch(*(getattr(self, f.name)[sl] for f in dataclasses.fields(self)))

    def micro_batches(self, size: int) -> Iterator[tuple[slice, "Batch"]]:
        """(rows, micro-batch) pairs of at most `size` sequences, in order."""
        for start in range(0, self.input_ids.shape[0], size):
            sl = slice(start, start + size)
            yield sl, self.rows(sl)


def collate(rollouts: Sequence[Rollout], pad_token_id: int) -> Batch:
    width = max(len(r.prompt_ids) + len(r.response_ids) for r in rollouts)
    rlen = max(1, max(len(r.response_ids) for r in rollouts))
    b = len(rollouts)
    input_ids = torch.full((b, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((b, width), dtype=torch.long)
    tokens = torch.full((b, rlen), pad_token_id, dtype=torch.long)
    positions = torch.zeros((b, rlen), dtype=torch.long)
    mask = torch.zeros((b, rlen), dtype=torch.float32)
    for i, r in enumerate(rollouts):
        seq = list(r.prompt_ids) + list(r.response_ids)
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        n = len(r.response_ids)
        tokens[i, :n] = torch.tensor(r.response_ids, dtype=torch.long)
        positions[i, :n] = torch.arange(len(r.prompt_ids), len(r.prompt_ids) + n)
        mask[i, :n] = torch.tensor(r.response_mask, dtype=torch.float32)
    rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)
    return Batch(input_ids, attention, tokens, positions, mask, rewards, np.array([r.uid for r in rollouts], dtype=object))


def _response_logits(model, batch: Batch) -> torch.Tensor:
    """Logits at the positions that predict the response tokens, [b, R, V]: the output head runs on those
    positions only (on a 49k vocabulary it would otherwise cost a fifth of the forward and GBs of memory)."""
    gather = (batch.response_positions - 1).clamp(min=0)  # the token at p is predicted at p - 1
    head, body = model.get_output_embeddings(), getattr(model, "base_model", None)
    if head is None or body is None or body is model or getattr(model.config, "final_logit_softcapping", None):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return torch.gather(logits, 1, gather.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    hidden = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return head(torch.gather(hidden, 1, gather.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])))


def response_logprobs(model, batch: Batch, micro_batch_size: int = 8, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities of the response tokens under softmax(logits / temperature), [B, R]; gradients flow when
    called outside no_grad. Pass the temperature the rollout sampled at (1.0 for SFT)."""
    out = []
    for _, micro in batch.micro_batches(micro_batch_size):
        logits = _response_logits(model, micro).float()
        logprobs = torch.log_softmax(logits / max(float(temperature), 1e-8), dim=-1)
        out.append(logprobs.gather(-1, micro.response_tokens.unsqueeze(-1)).squeeze(-1))
    return torch.cat(out)


def grpo_advantages(batch: Batch, norm_by_std: bool = True) -> torch.Tensor:
    """verl's GRPO outcome advantage; the reward sits on each trajectory's last response token."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    scores = torch.zeros_like(batch.response_mask)
    last = (batch.response_mask > 0).float().cumsum(-1).argmax(-1)  # last model token of each trajectory
    scores[torch.arange(len(last)), last] = batch.rewards
    advantages, _ = compute_grpo_outcome_advantage(scores, batch.response_mask, batch.uids,
                                                   norm_adv_by_std_in_grpo=norm_by_std)
    return advantages


def loss_config(clip_low: float, clip_high: float, micro_batch_size: int, batch_num_tokens: int):
    """The verl actor config its policy loss reads: clip-higher ratios and the global batch's token count."""
    from verl.workers.config.actor import ActorConfig

    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_mini_batch_size=1, clip_ratio_low=clip_low,
                       clip_ratio_high=clip_high, ppo_micro_batch_size_per_gpu=micro_batch_size,
                       global_batch_info={"dp_size": 1, "batch_num_tokens": batch_num_tokens})


def policy_step(model, optimizer, batch: Batch, advantages: torch.Tensor, old_logprobs: Optional[torch.Tensor],
                clip_low: float = 0.2, clip_high: float = 0.28, max_grad_norm: float = 1.0,
                micro_batch_size: int = 8, progress: Optional[Callable[[int], None]] = None,
                temperature: float = 1.0) -> dict[str, float]:
    """One optimizer step of verl's clipped policy loss (token-mean over the whole batch), on log-probs at the
    rollout's `temperature`.

    `old_logprobs=None` means on-policy (the rollout came from these very weights, one update per rollout): the
    old log-probs are the current ones, detached, which saves a forward pass; the ratio is then 1 and the clip
    inactive (see the module docstring)."""
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla

    model.train()
    optimizer.zero_grad(set_to_none=True)
    total_tokens = int(batch.response_mask.sum().clamp(min=1))
    config = loss_config(clip_low, clip_high, micro_batch_size, total_tokens)
    stats = {"pg_loss": 0.0, "pg_clipfrac": 0.0, "ppo_kl": 0.0}
    for sl, micro in batch.micro_batches(micro_batch_size):
        logprobs = response_logprobs(model, micro, micro_batch_size, temperature)
        old = logprobs.detach() if old_logprobs is None else old_logprobs[sl]
        # token-mean over the whole batch: verl divides each micro-batch's token sum by `total_tokens`
        loss, metrics = compute_policy_loss_vanilla(old, logprobs, advantages[sl], micro.response_mask,
                                                    loss_agg_mode="token-mean", config=config)
        loss.backward()
        share = float(micro.response_mask.sum()) / total_tokens
        stats["pg_loss"] += float(loss.detach())
        stats["pg_clipfrac"] += metrics["actor/pg_clipfrac"] * share
        stats["ppo_kl"] += metrics["actor/ppo_kl"] * share
        if progress is not None:
            progress(micro.input_ids.shape[0])  # sequences done
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
    optimizer.step()
    model.eval()
    return stats
