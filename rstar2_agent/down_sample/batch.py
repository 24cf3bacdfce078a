"""GRPO-RoC down-sampling of a verl ``DataProto`` rollout batch, between the reward and the advantage.

Per step: score each trace (sum of ``token_level_scores``), drop groups whose rewards are all equal, keep
``down_sample_to_n`` traces per group with RoC, then drop whole groups until the batch divides the actor's
data-parallel world size. Metrics are computed whether or not selection is on.

verl is not imported here: the batch only needs ``len``, ``.batch``, ``.non_tensor_batch`` and ``select_idxs``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rstar2_agent.down_sample.groups import group_indices, groups_to_keep_for_world_size
from rstar2_agent.down_sample.penalty import (answer_format_penalty, count_answers, count_assistant_turns,
                                              count_tool_errors, count_tool_responses, error_ratio_penalty)
from rstar2_agent.down_sample.reject_equal import reject_equal_reward, reject_equal_reward_metrics
from rstar2_agent.down_sample.roc import select_roc

if TYPE_CHECKING:
    from verl.protocol import DataProto

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownSamplingConfig:
    """The ``augmentation`` block of the trainer config (upstream's keys and defaults: everything off).

    * ``do_down_sampling``: master switch; off means the batch is returned unchanged (metrics still computed).
    * ``down_sample_to_n``: traces kept per group by RoC; ``<= 0`` means no RoC selection.
    * ``reject_equal_reward``: drop groups whose rewards are all equal.
    * ``roc_error_ratio`` / ``roc_answer_format``: which penalties rank the positives.
    * ``min_zero_reward_trace_num`` / ``min_non_zero_reward_trace_num``: minimum negatives / positives kept per
      group where available; negative means none.

    The rStar2-Agent recipe uses ``rollout.n=32`` with (True, 16, True, True, True, 2, 2).

    >>> cfg = DownSamplingConfig.from_config({"augmentation": {"do_down_sampling": True, "down_sampling_config": {
    ...     "down_sample_to_n": 16, "reject_equal_reward": True, "roc_error_ratio": True, "roc_answer_format": True,
    ...     "min_zero_reward_trace_num": 2, "min_non_zero_reward_trace_num": 2}}})
    >>> cfg.down_sample_to_n, cfg.min_zero_reward_trace_num, cfg.do_down_sampling
    (16, 2, True)
    >>> DownSamplingConfig.from_config({}).do_down_sampling     # no augmentation block: all off
    False
    """

    do_down_sampling: bool = False
    down_sample_to_n: int = -1
    reject_equal_reward: bool = False
    roc_error_ratio: bool = False
    roc_answer_format: bool = False
    min_zero_reward_trace_num: int = -1
    min_non_zero_reward_trace_num: int = -1

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = bool if f.type in (bool, "bool") else int
            if kind is bool and not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"down-sampling option {f.name} must be a bool, got {value!r}")
            if kind is int and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))):
                raise TypeError(f"down-sampling option {f.name} must be an int, got {value!r}")
        n = self.down_sample_to_n
        mins = max(self.min_zero_reward_trace_num, 0) + max(self.min_non_zero_reward_trace_num, 0)
        if n > 0 and mins > n:
            raise ValueError(f"min_zero_reward_trace_num + min_non_zero_reward_trace_num must be <= "
                             f"down_sample_to_n, got {self.min_zero_reward_trace_num} + "
                             f"{self.min_non_zero_reward_trace_num} > {n}")

    @classmethod
    def from_config(cls, config: Any) -> "DownSamplingConfig":
        """Read ``augmentation.do_down_sampling`` and ``augmentation.down_sampling_config.*`` from the trainer
        config (an OmegaConf ``DictConfig`` or a plain mapping). Missing keys keep their defaults; an unknown key
        in ``down_sampling_config`` is an error (a typo would otherwise silently switch a feature off)."""
        if config is not None and not isinstance(config, Mapping):
            from omegaconf import OmegaConf

            config = OmegaConf.to_container(config, resolve=True)
        aug = (config or {}).get("augmentation") or {}
        inner = dict(aug.get("down_sampling_config") or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"do_down_sampling"}
        unknown = sorted(set(inner) - names)
        if unknown:
            raise ValueError(f"unknown augmentation.down_sampling_config keys {unknown}; known: {sorted(names)}")
        return cls(do_down_sampling=aug.get("do_down_sampling", False), **inner)


def decode_prompt_response_texts(batch: "DataProto", tokenizer) -> tuple[list[str], list[str]]:
    """Prompt and response text of each trace, special tokens kept, tool output included.

    The valid tokens are those with ``attention_mask`` 1 (prompts are left-padded, responses right-padded; the
    response part of the mask also covers tool-response tokens, unlike ``response_mask``). A non-None
    ``non_tensor_batch["prompt_text"]`` / ``["response_text"]`` entry, when present, is used instead.

    Worked example with a character tokenizer (token id = code point, 0 = padding):

    >>> import torch
    >>> from verl.protocol import DataProto
    >>> class CharTokenizer:
    ...     def batch_decode(self, seqs, **kwargs): return ["".join(map(chr, s)) for s in seqs]
    >>> batch = DataProto.from_dict(tensors={
    ...     "prompts": torch.tensor([[0, ord("H"), ord("i")]]), "responses": torch.tensor([[ord("!"), 0]]),
    ...     "attention_mask": torch.tensor([[0, 1, 1, 1, 0]])})
    >>> decode_prompt_response_texts(batch, CharTokenizer())
    (['Hi'], ['!'])
    """
    prompts = batch.batch["prompts"]
    responses = batch.batch["responses"]
    mask = batch.batch["attention_mask"].bool()
    plen = prompts.shape[-1]
    texts = []
    for key, ids, valid in (("prompt_text", prompts, mask[:, :plen]), ("response_text", responses, mask[:, plen:])):
        decoded = tokenizer.batch_decode([ids[i][valid[i]].tolist() for i in range(len(ids))],
                                         skip_special_tokens=False, clean_up_tokenization_spaces=False)
        given = batch.non_tensor_batch.get(key)
        if given is not None:
            decoded = [d if g is None else str(g) for d, g in zip(decoded, given)]
        texts.append(decoded)
    return texts[0], texts[1]


def rollout_text_metrics(err_counts, resp_counts, err_penalties, answer_counts) -> dict[str, float]:
    """Tool-error and answer-count metrics over the traces given (per-trace counts in, batch numbers out).

    >>> m = rollout_text_metrics([1, 0, 0], [2, 1, 0], [0.5, 0.0, 0.5], [1, 0, 3])
    >>> m["roc_error_ratio/global_err_ratio"], m["roc_error_ratio/penalty_weight"]
    (0.3333333333333333, 0.3333333333333333)
    >>> [m["roc_answer_format/" + k] for k in ("answer_per_rollout_mean", "zero_answer_count",
    ...                                         "one_answer_count", "gt_one_answer_count")]
    [1.3333333333333333, 1, 1, 1]
    """
    answers = np.asarray(answer_counts, dtype=np.int64)
    total_resp = int(np.sum(resp_counts))
    return {
        "roc_error_ratio/global_err_ratio": float(np.sum(err_counts)) / total_resp if total_resp else 0.0,
        "roc_error_ratio/penalty_weight": float(np.mean(err_penalties)) if len(err_penalties) else 0.0,
        "roc_answer_format/answer_per_rollout_mean": float(answers.mean()) if len(answers) else 0.0,
        "roc_answer_format/zero_answer_count": int((answers == 0).sum()),
        "roc_answer_format/one_answer_count": int((answers == 1).sum()),
        "roc_answer_format/gt_one_answer_count": int((answers > 1).sum()),
    }


def _keep_divisible(keep: np.ndarray, uids: np.ndarray, world_size: int) -> np.ndarray:
    """Clear whole groups from ``keep`` until ``keep.sum()`` divides ``world_size`` (see
    :func:`groups_to_keep_for_world_size`; groups ordered by their first kept row)."""
    rows = np.flatnonzero(keep)
    groups = [rows[idx] for idx in group_indices(uids[rows]).values()]
    keep = keep.copy()
    for idx, kept in zip(groups, groups_to_keep_for_world_size([len(g) for g in groups], world_size)):
        if not kept:
            keep[idx] = False
    return keep


def down_sample_batch(batch: "DataProto", tokenizer, cfg: DownSamplingConfig,
                      world_size: int) -> tuple["DataProto | None", dict[str, float]]:
    """Down-sample a scored rollout batch; returns ``(batch or None, metrics)``.

    Needs ``batch.batch["token_level_scores"]`` (a trace's score is its sum), ``prompts``, ``responses``,
    ``attention_mask`` and ``batch.non_tensor_batch["uid"]`` (the group of each trace).

    With ``cfg.do_down_sampling`` off the batch is returned as is. Otherwise, in order:

    1. ``reject_equal_reward``: drop groups whose rewards are all equal (:func:`reject_equal_reward`).
    2. RoC, if ``down_sample_to_n > 0``: every remaining group keeps exactly ``n`` traces
       (:func:`select_roc`; positives ranked by the enabled penalties). A group with fewer than ``n`` traces is
       dropped, as upstream does, so every group GRPO sees has the same size.
    3. World size: whole groups are dropped until the trace count is a multiple of ``world_size``: the fewest
       traces possible, preferring the groups nearest the end of the batch, i.e. those upstream's
       ``batch[:B // world_size * world_size]`` would have cut (:func:`groups_to_keep_for_world_size`). Upstream
       truncates rows instead, which can leave a partial group. With equal group sizes that are a multiple of
       ``world_size`` (16 with world size 8) nothing is dropped here. When the group sizes cannot add up to a
       multiple of ``world_size`` at all (say two groups of 3 with world size 4), everything is dropped and a
       warning says so.

    Returns ``None`` when no trace is left (the trainer then skips the step). Row order is preserved.

    Penalties use the response text (``<answer>`` counts would otherwise include the prompt's format
    instructions) and the real number of assistant turns, counted over prompt+response so that the first turn,
    whose header ends the prompt, is included (see :func:`answer_format_penalty` for upstream's quirk).

    Metrics (all computed even when selection is off): ``down_sampling/before_sampling_trace_num``,
    ``down_sampling/after_sampling_trace_num``, ``down_sampling/small_group_dropped_num``,
    ``down_sampling/world_size_dropped_trace_num``; ``reject_equal_reward/*``
    (:func:`reject_equal_reward_metrics`); ``roc_error_ratio/global_err_ratio`` and ``penalty_weight``,
    ``roc_answer_format/answer_per_rollout_mean`` and ``zero_/one_/gt_one_answer_count``
    (:func:`rollout_text_metrics`). The rollout metrics cover the whole batch before any selection, so they do
    not depend on the selection settings (upstream computes them after reject-equal).

    Worked example: prompts ``p`` and ``q``, 4 traces each, the same four responses; ``p``'s traces 0 and 2 are
    correct, ``q`` got nothing right. Keeping 2 per group on world size 2 with the error-ratio penalty:
    ``q`` is all-equal and goes; ``p`` keeps round(2*2/4) = 1 negative (its first, trace 1) and 1 positive,
    trace 0, whose tool call worked (penalty 0), over trace 2, whose call failed (penalty 1). Two of the four
    tool responses say "Error": global error ratio 0.5.

    >>> import torch
    >>> from verl.protocol import DataProto
    >>> class CharTokenizer:                      # token id = code point, 0 = padding
    ...     def batch_decode(self, seqs, **kwargs): return ["".join(map(chr, s)) for s in seqs]
    >>> ok, bad = "<tool_response>ok</tool_response>", "<tool_response>Error</tool_response>"
    >>> texts = [ok + "<answer>7</answer>", "<answer>6</answer>", bad + "<answer>7</answer>", "<answer>5</answer>"] * 2
    >>> width = max(map(len, texts))
    >>> responses = torch.tensor([[ord(c) for c in t] + [0] * (width - len(t)) for t in texts])
    >>> scores = torch.zeros(8, width); scores[[0, 2], 0] = 1.0
    >>> batch = DataProto.from_dict(
    ...     tensors={"prompts": torch.full((8, 1), ord("Q")), "responses": responses, "token_level_scores": scores,
    ...              "attention_mask": torch.cat([torch.ones(8, 1, dtype=torch.long), (responses != 0).long()], 1)},
    ...     non_tensors={"uid": np.array(["p"] * 4 + ["q"] * 4, dtype=object), "row": np.arange(8)})
    >>> cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
    ...                          roc_error_ratio=True)
    >>> out, m = down_sample_batch(batch, CharTokenizer(), cfg, world_size=2)
    >>> out.non_tensor_batch["row"].tolist()
    [0, 1]
    >>> [m[k] for k in ("down_sampling/before_sampling_trace_num", "down_sampling/after_sampling_trace_num",
    ...                 "reject_equal_reward/solve_equal_total_ratio", "roc_error_ratio/global_err_ratio")]
    [8, 2, 0.5, 0.5]
    """
    if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    size = len(batch)
    metrics: dict[str, float] = {"down_sampling/before_sampling_trace_num": size}
    scores = batch.batch["token_level_scores"].sum(dim=-1).double().cpu().numpy() if size else np.zeros(0)
    uids = np.asarray(batch.non_tensor_batch["uid"], dtype=object)
    metrics.update(reject_equal_reward_metrics(scores, uids))

    prompt_texts, response_texts = decode_prompt_response_texts(batch, tokenizer) if size else ([], [])
    turns = [count_assistant_turns(r, p) for p, r in zip(prompt_texts, response_texts)]
    err_pen = np.array([error_ratio_penalty(r) for r in response_texts], dtype=np.float64)
    fmt_pen = np.array([answer_format_penalty(r, t) for r, t in zip(response_texts, turns)], dtype=np.float64)
    metrics.update(rollout_text_metrics([count_tool_errors(r) for r in response_texts],
                                        [count_tool_responses(r) for r in response_texts], err_pen,
                                        [count_answers(r) for r in response_texts]))
    metrics["down_sampling/small_group_dropped_num"] = 0
    metrics["down_sampling/world_size_dropped_trace_num"] = 0

    if not cfg.do_down_sampling:
        metrics["down_sampling/after_sampling_trace_num"] = size
        return (batch if size else None), metrics

    keep = np.ones(size, dtype=bool)
    if cfg.reject_equal_reward:
        keep &= reject_equal_reward(scores, uids)
    n = cfg.down_sample_to_n
    if n > 0:
        penalty = err_pen * cfg.roc_error_ratio + fmt_pen * cfg.roc_answer_format
        for idx in group_indices(uids).values():
            idx = idx[keep[idx]]
            if len(idx) == 0:
                continue
            keep[idx] = False
            if len(idx) < n:
                metrics["down_sampling/small_group_dropped_num"] += 1
                continue
            chosen = select_roc(scores[idx], penalty[idx], n, cfg.min_zero_reward_trace_num,
                                cfg.min_non_zero_reward_trace_num)
            keep[idx[chosen]] = True

    divisible = _keep_divisible(keep, uids, world_size)
    metrics["down_sampling/world_size_dropped_trace_num"] = int(keep.sum() - divisible.sum())
    if keep.any() and not divisible.any():
        sizes = [len(g) for g in group_indices(uids[keep]).values()]
        logger.warning("down-sampling: no set of whole groups (sizes %s) adds up to a multiple of world_size=%d; "
                       "dropping all %d traces rather than cutting a group", sizes, world_size, int(keep.sum()))
    keep = divisible
    kept = int(keep.sum())
    metrics["down_sampling/after_sampling_trace_num"] = kept
    if kept == 0:
        return None, metrics
    if kept == size:
        return batch, metrics
    return batch.select_idxs(keep), metrics
