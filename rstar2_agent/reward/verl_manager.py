"""The verl (0.9.1) reward manager ``code_judge``: rStar2-Agent's outcome reward, scored in a process pool.

It is registered in ``verl.experimental.reward_loop.reward_manager``, the registry verl 0.9.1's trainer resolves
``reward.reward_manager.name`` in: its reward-loop workers call ``await manager.run_single(data)`` per sample
(during the rollout, or for a colocated batch via ``compute_score_batch``) and ``assemble_rm_scores(data, scores)``.
verl's older batch registry (``verl.workers.reward_manager``) is not used by that trainer, so this class is not in it.

The registry only knows classes whose module was imported, so the process that builds the manager
must ``import rstar2_agent.reward.verl_manager`` first (or use ``reward.reward_manager.source=importlib``
with this file's path and ``name=CodeJudgeRewardManager``).

What is scored, per sample:

* Only model text: the tokens the model wrote are decoded, one contiguous span at a time, and tool
  output never is, so a ``\\boxed{}`` printed by a tool (even after a forged ``</tool_response>``) never
  counts. Which tokens the model wrote comes from, first match wins (:func:`model_token_mask`):
  ``batch["response_mask"]``; the ``model_spans`` extra field of our agent loop,
  which verl's reward loop passes as ``non_tensor_batch["tool_extra_fields"]`` (verl 0.9.1 sends no
  ``response_mask`` there); or, for a single-turn trajectory (``__num_turns__`` <= 2, no tool turn), every
  token. Anything else is refused with an error rather than guessed from the text.
* The score (1.0/0.0 from :func:`rstar2_agent.reward.compute_score`, run in a
  :class:`~rstar2_agent.reward.pool.RewardPool` with a hard per-item timeout) is written into a zero
  tensor shaped like ``responses``, at the index of that sample's last valid response token.
* A sample with no valid response token scores 0.0 and nothing is written: writing at index
  ``valid_length - 1 = -1`` would put the reward on the last padding position (verl #6476).
* A trajectory the sandbox failed (``infra_error`` in its ``tool_extra_fields``, set by our agent loop) is not
  scored: it gets 0.0 without decoding or a pool call, and the RoC trainer drops it before selection anyway.

Settings come from ``config.reward.reward_kwargs`` (``pool_workers``: pool processes, as the CPU engine's
``reward.pool_workers``; verl's ``reward.num_workers`` counts reward-loop workers) or constructor keywords:
``num_workers`` (pool processes), ``timeout_s`` (per item, default 5), ``score_fn`` (``"module:function"``). verl's
``compute_score`` argument is ignored, as upstream does, because scoring must happen in the pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import torch

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register as register_reward_loop_manager
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from rstar2_agent.cores import usable_cores
from rstar2_agent.reward.pool import DEFAULT_SCORE_FN, RewardPool, RewardPoolBrokenError
from rstar2_agent.rollout.core import MODEL_SPANS

__all__ = [
    "CodeJudgeRewardManager",
    "response_valid_mask",
    "last_valid_index",
    "model_token_spans",
    "decode_model_text",
    "model_token_mask",
    "ground_truth_at",
    "place_scores",
    "sandbox_failed",
]

SPAN_SEPARATOR = "\n"


# --------------------------------------------------------------------------------------------------
# One sample's tensors -> text, position, ground truth
# --------------------------------------------------------------------------------------------------


def response_valid_mask(data: DataProto) -> torch.Tensor:
    """Bool mask ``(batch, response_len)`` of real (non-padding) response tokens.

    The last ``response_len`` columns of ``attention_mask`` cover the response, whatever the prompt
    length, so this works for padded trainer batches and for the agent loop's unpadded ones.
    """
    response_len = data.batch["responses"].shape[-1]
    return data.batch["attention_mask"][:, -response_len:].bool()


def last_valid_index(valid_row: torch.Tensor) -> int | None:
    """Index of the last valid token in one row, or None when the row has none.

    >>> last_valid_index(torch.tensor([True, True, False])), last_valid_index(torch.tensor([False]))
    (1, None)
    """
    positions = torch.nonzero(valid_row, as_tuple=False)
    return int(positions[-1, 0]) if positions.numel() else None


def model_token_spans(ids: torch.Tensor, keep: torch.Tensor) -> list[list[int]]:
    """Split ``ids`` into the contiguous runs where ``keep`` is true.

    >>> model_token_spans(torch.tensor([5, 6, 7, 8, 9]), torch.tensor([1, 1, 0, 0, 1]).bool())
    [[5, 6], [9]]
    """
    spans: list[list[int]] = []
    current: list[int] = []
    for token, kept in zip(ids.tolist(), keep.tolist()):
        if kept:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


def decode_model_text(tokenizer: Any, ids: torch.Tensor, keep: torch.Tensor) -> str:
    """Decode the text the model wrote in one response row: the tokens where ``keep`` is true, span by span,
    joined by a newline so text on both sides of a tool turn cannot fuse into a new box."""
    spans = model_token_spans(ids, keep.bool())
    return SPAN_SEPARATOR.join(tokenizer.decode(span, skip_special_tokens=True) for span in spans)


def spans_to_mask(spans: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    """Bool mask of ``width`` positions, true inside the ``[start, end)`` spans.

    >>> spans_to_mask([[0, 2], [3, 4]], 5).tolist()
    [True, True, False, True, False]
    """
    mask = torch.zeros(width, dtype=torch.bool)
    for start, end in spans:
        mask[int(start):int(end)] = True
    return mask


def model_token_mask(data: DataProto, row: int) -> torch.Tensor:
    """Which response positions of ``row`` the model wrote (bool, ``responses``' width); see the module doc.

    Raises ValueError when the batch cannot tell model text from tool output.
    """
    width = data.batch["responses"].shape[-1]
    if "response_mask" in data.batch.keys():
        return data.batch["response_mask"][row].bool()
    extra = data.non_tensor_batch.get("tool_extra_fields")
    fields = extra[row] if extra is not None else None
    if isinstance(fields, dict) and MODEL_SPANS in fields:
        return spans_to_mask(fields[MODEL_SPANS], width)
    turns = data.non_tensor_batch.get("__num_turns__")
    if turns is not None and int(turns[row]) <= 2:
        return torch.ones(width, dtype=torch.bool)
    raise ValueError(
        "code_judge reward: cannot tell the model's text from tool output in this batch (no response_mask, no "
        f"{MODEL_SPANS!r} in tool_extra_fields, not a single-turn trajectory). Roll out with the rstar2_agent "
        "agent loop, or pass response_mask."
    )


def sandbox_failed(data: DataProto, row: int) -> bool:
    """Whether our agent loop marked ``row``'s trajectory ``infra_error`` (the sandbox failed one of its calls)."""
    extra = data.non_tensor_batch.get("tool_extra_fields")
    fields = extra[row] if extra is not None else None
    return isinstance(fields, dict) and bool(fields.get("infra_error", False))


def ground_truth_at(data: DataProto, index: int) -> str:
    """``non_tensor_batch["reward_model"][index]["ground_truth"]`` as a string."""
    try:
        truth = data.non_tensor_batch["reward_model"][index]["ground_truth"]
    except (KeyError, IndexError, TypeError) as exc:
        raise KeyError(f"sample {index} has no reward_model.ground_truth in non_tensor_batch") from exc
    return str(truth)


def place_scores(responses: torch.Tensor, positions: Sequence[int | None], scores: Sequence[float]) -> torch.Tensor:
    """A float32 zero tensor shaped like ``responses`` with each score at its row's position.

    Rows whose position is None (empty responses) stay all zero.

    >>> place_scores(torch.zeros(2, 3, dtype=torch.long), [1, None], [1.0, 1.0]).tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    reward = torch.zeros_like(responses, dtype=torch.float32)
    for row, (position, score) in enumerate(zip(positions, scores)):
        if position is not None:
            reward[row, position] = float(score)
    return reward


def _reward_kwargs(config: Any) -> dict:
    """``config.reward.reward_kwargs`` as a plain dict ({} when absent)."""
    reward = config.get("reward") if hasattr(config, "get") else None
    section = reward.get("reward_kwargs") if hasattr(reward, "get") else None
    return dict(section or {})


# --------------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------------


@register_reward_loop_manager("code_judge")
class CodeJudgeRewardManager(RewardManagerBase):
    """rStar2-Agent outcome reward (1.0 correct / 0.0 otherwise) for verl 0.9.1's reward loop, built as verl builds
    it: ``(config=, tokenizer=, compute_score=, reward_router_address=, reward_model_tokenizer=)``."""

    def __init__(
        self,
        config: Any = None,
        tokenizer: Any = None,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        num_workers: int | None = None,
        timeout_s: float | None = None,
        score_fn: str | None = None,
        pool: RewardPool | None = None,
        **unused: Any,
    ) -> None:
        """Settings: the keyword, else ``config.reward.reward_kwargs``, else the default. The default pool size
        is this node's share of the CPUs, ``usable_cores() // reward.num_workers``: verl starts
        ``reward.num_workers`` reward-loop workers (8 by default), each with its own manager and pool, and with
        a pool per worker as large as the node they would start 8x the CPUs in scoring processes."""
        if tokenizer is None:
            raise ValueError("CodeJudgeRewardManager needs a tokenizer to decode responses")
        RewardManagerBase.__init__(self, config, tokenizer, compute_score)
        settings = _reward_kwargs(config)
        if num_workers is None:
            num_workers = next((settings[key] for key in ("pool_workers", "num_workers")  # num_workers: the old name
                                if settings.get(key) is not None), None)
        if num_workers is None:
            reward = config.get("reward") if hasattr(config, "get") else None
            managers = int((reward.get("num_workers") if hasattr(reward, "get") else None) or 1)
            num_workers = max(1, usable_cores() // max(1, managers))
        self.num_workers = int(num_workers)
        self.timeout_s = float(timeout_s if timeout_s is not None else settings.get("timeout_s", 5.0))
        self.score_fn = score_fn or settings.get("score_fn") or DEFAULT_SCORE_FN
        self._pool = pool
        self._owns_pool = pool is None
        self._pool_lock = threading.Lock()

    # ---- pool ----------------------------------------------------------------------------------

    @property
    def pool(self) -> RewardPool:
        """The scoring pool, started on first use (so building a manager spawns nothing), and started again
        after :meth:`close`. A broken pool (its workers cannot start) raises instead of being replaced: every
        replacement would fail the same way, each after spawning a full pool of processes."""
        with self._pool_lock:
            if self._pool is not None and self._pool.broken:
                raise RewardPoolBrokenError(f"code_judge reward pool is broken: {self._pool.broken}")
            if self._pool is None or self._pool.closed:
                self._pool = RewardPool(num_workers=self.num_workers, timeout_s=self.timeout_s, score_fn=self.score_fn)
                self._owns_pool = True
            return self._pool

    def close(self) -> None:
        """Stop the pool if this manager started it."""
        with self._pool_lock:
            if self._pool is not None and self._owns_pool:
                self._pool.close()

    # ---- one sample ----------------------------------------------------------------------------

    def _prepare(self, data: DataProto) -> tuple[list[str], list[str], list[int | None]]:
        """Per row: the model's text, the ground truth, and the last valid response index (or None)."""
        valid = response_valid_mask(data)
        responses = data.batch["responses"]
        texts, truths, positions = [], [], []
        for row in range(len(data)):
            position = last_valid_index(valid[row])
            positions.append(position)
            truths.append(ground_truth_at(data, row))
            if position is None:
                texts.append("")
                continue
            keep = valid[row] & model_token_mask(data, row)
            texts.append(decode_model_text(self.tokenizer, responses[row], keep))
        return texts, truths, positions

    # ---- reward-loop API (verl 0.9.1 trainer) ---------------------------------------------------

    async def run_single(self, data: DataProto) -> dict:
        """Score one sample (the last row for multi-output trajectories), without blocking the loop."""
        data = data[-1:]
        if sandbox_failed(data, 0):  # not the model's doing, and never trained on: not worth a worker's time
            return {"reward_score": 0.0, "reward_extra_info": {"acc": 0.0}}
        texts, truths, positions = await asyncio.get_running_loop().run_in_executor(None, self._prepare, data)
        score = 0.0 if positions[0] is None else await asyncio.wrap_future(self.pool.submit(texts[0], truths[0]))
        return {"reward_score": score, "reward_extra_info": {"acc": score}}

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[float]) -> torch.Tensor:
        """Put each sample's score at its last valid response token; empty responses get none."""
        valid = response_valid_mask(data)
        positions = [last_valid_index(valid[row]) for row in range(len(data))]
        return place_scores(data.batch["responses"], positions, scores)
