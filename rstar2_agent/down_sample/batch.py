"""GRPO-RoC down-sampling of one scored rollout, between the reward and the advantage, on plain lists.

Per step: drop groups whose rewards are all equal, then keep ``down_sample_to_n`` traces per group with RoC
(:func:`select_rows`). Metrics are computed whether or not selection is on. No torch or verl here: the verl trainer
(``rstar2_agent.trainer.selection``) and the CPU engine decode the responses and pass texts and rewards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rstar2_agent.down_sample.groups import group_indices
from rstar2_agent.down_sample.penalty import (answer_format_penalty, count_answers, count_assistant_turns,
                                              count_tool_errors, count_tool_responses, error_ratio_penalty)
from rstar2_agent.down_sample.reject_equal import reject_equal_reward, reject_equal_reward_metrics
from rstar2_agent.down_sample.roc import select_roc

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


def select_rows(uids: Sequence[Hashable], response_texts: Sequence[str], turns: Sequence[int],
                rewards: Sequence[float], cfg: DownSamplingConfig,
                infra_errors: Sequence[bool] | None = None) -> tuple[list[int] | None, dict[str, float]]:
    """The positions GRPO-RoC keeps from one scored rollout (ascending), or None when none is left; plus metrics.

    ``infra_errors`` (one bool per trace, default all False) marks trajectories whose tool call the sandbox
    failed (`rstar2_agent.rollout.Trajectory.infra_error`). Rule: such a trace is **never kept, whatever the
    settings, and is invisible to everything else** -- it is removed before reject-equal, RoC and the rollout
    text metrics (so RoC's error ratio never counts it), and its reward is ignored. Its group is then judged
    and, downstream, normalised by GRPO over its remaining traces only, so the sandbox's fault neither penalises
    the group (an infra trace scored 0 would be a false negative, pushing the group's correct answers up and
    a possibly good answer down) nor shrinks the step's signal beyond the lost trace. With RoC a group left
    with fewer than ``down_sample_to_n`` traces is dropped, as any small group. Every other step is
    :func:`_select_clean` on the remaining traces. ``down_sampling/infra_error_dropped_num`` counts them
    (``down_sampling/before_sampling_trace_num`` still counts every trace).

    Worked example: prompts ``p`` and ``q``, 4 traces each; the sandbox failed trace 3 of each (reward 0, as a
    failed answer would score). ``p``: rewards 1, 0, 1, [0] -> it keeps traces 0, 1, 2 and GRPO's group mean is
    2/3, not 1/2. ``q``: rewards 1, 1, 1, [0] -> without its infra trace every reward is equal, so the group
    is rejected (nothing to learn) instead of training trace 7 as a wrong answer.

    >>> texts = ["<answer>1</answer>"] * 8
    >>> cfg = DownSamplingConfig(do_down_sampling=True, reject_equal_reward=True)
    >>> infra = [False, False, False, True] * 2
    >>> rows, m = select_rows(["p"] * 4 + ["q"] * 4, texts, [1] * 8, [1, 0, 1, 0, 1, 1, 1, 0], cfg, infra)
    >>> rows, m["down_sampling/infra_error_dropped_num"], m["down_sampling/before_sampling_trace_num"]
    ([0, 1, 2], 2, 8)
    >>> select_rows(["p"] * 4 + ["q"] * 4, texts, [1] * 8, [1, 0, 1, 0, 1, 1, 1, 0], cfg)[0]  # without the flags
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> select_rows(["p"] * 2, texts[:2], [1] * 2, [1, 0], DownSamplingConfig(), [False, True])[0]  # even when off
    [0]
    """
    size = len(uids)
    infra = np.zeros(size, dtype=bool) if infra_errors is None else np.asarray(list(infra_errors), dtype=bool)
    if len(infra) != size:
        raise ValueError(f"select_rows: {size} uids but {len(infra)} infra_error flags")
    if not len(response_texts) == len(turns) == len(rewards) == size:
        raise ValueError(f"select_rows: {size} uids but {len(response_texts)} texts, {len(turns)} turn counts and "
                         f"{len(rewards)} rewards")
    clean = np.flatnonzero(~infra)
    rows, metrics = _select_clean([uids[i] for i in clean], [response_texts[i] for i in clean],
                                  [turns[i] for i in clean], [rewards[i] for i in clean], cfg)
    metrics["down_sampling/before_sampling_trace_num"] = size
    metrics["down_sampling/infra_error_dropped_num"] = int(infra.sum())
    return (None if rows is None else clean[rows].tolist()), metrics


def _select_clean(uids: Sequence[Hashable], response_texts: Sequence[str], turns: Sequence[int],
                  rewards: Sequence[float], cfg: DownSamplingConfig) -> tuple[list[int] | None, dict[str, float]]:
    """:func:`select_rows` on traces without an infra error.

    Inputs, one entry per trace: its group (``uid``), its response text (special tokens kept, tool output
    included), its number of assistant turns (:func:`count_assistant_turns`, counting the first turn whose header
    ends the prompt) and its reward. With ``cfg.do_down_sampling`` off every position is kept. Otherwise, in order:

    1. ``reject_equal_reward``: drop groups whose rewards are all equal (:func:`reject_equal_reward`).
    2. RoC, if ``down_sample_to_n > 0``: every remaining group keeps exactly ``n`` traces (:func:`select_roc`;
       positives ranked by the enabled penalties). A group with fewer than ``n`` traces is dropped, as upstream
       does, so every group GRPO sees has the same size.

    Batch divisibility by the data-parallel world size is verl's business: its trainer pads the kept batch.

    Metrics (all computed even when selection is off): ``down_sampling/before_sampling_trace_num``,
    ``down_sampling/after_sampling_trace_num``, ``down_sampling/small_group_dropped_num``;
    ``reject_equal_reward/*`` (:func:`reject_equal_reward_metrics`); ``roc_error_ratio/global_err_ratio`` and
    ``penalty_weight``, ``roc_answer_format/answer_per_rollout_mean`` and ``zero_/one_/gt_one_answer_count``
    (:func:`rollout_text_metrics`). The rollout metrics cover every trace before selection, so they do not depend
    on the selection settings (upstream computes them after reject-equal).

    Worked example: prompts ``p`` and ``q``, 4 traces each, the same four responses; ``p``'s traces 0 and 2 are
    correct, ``q`` got nothing right. Keeping 2 per group with the error-ratio penalty: ``q`` is all-equal and
    goes; ``p`` keeps round(2*2/4) = 1 negative (its first, trace 1) and 1 positive, trace 0, whose tool call
    worked (penalty 0), over trace 2, whose call failed (penalty 1). Two of the four tool responses say "Error":
    global error ratio 0.5.

    >>> ok, bad = "<tool_response>ok</tool_response>", "<tool_response>Error</tool_response>"
    >>> texts = [ok + "<answer>7</answer>", "<answer>6</answer>", bad + "<answer>7</answer>", "<answer>5</answer>"] * 2
    >>> cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
    ...                          roc_error_ratio=True)
    >>> rows, m = _select_clean(["p"] * 4 + ["q"] * 4, texts, [1] * 8, [1, 0, 1, 0] + [0] * 4, cfg)
    >>> rows
    [0, 1]
    >>> [m[k] for k in ("down_sampling/before_sampling_trace_num", "down_sampling/after_sampling_trace_num",
    ...                 "reject_equal_reward/solve_equal_total_ratio", "roc_error_ratio/global_err_ratio")]
    [8, 2, 0.5, 0.5]
    """
    size = len(uids)
    if not len(response_texts) == len(turns) == len(rewards) == size:
        raise ValueError(f"select_rows: {size} uids but {len(response_texts)} texts, {len(turns)} turn counts and "
                         f"{len(rewards)} rewards")
    metrics: dict[str, float] = {"down_sampling/before_sampling_trace_num": size}
    scores = np.asarray(rewards, dtype=np.float64)
    uids = np.asarray(list(uids), dtype=object)
    metrics.update(reject_equal_reward_metrics(scores, uids))
    err_pen = np.array([error_ratio_penalty(r) for r in response_texts], dtype=np.float64)
    fmt_pen = np.array([answer_format_penalty(r, t) for r, t in zip(response_texts, turns)], dtype=np.float64)
    metrics.update(rollout_text_metrics([count_tool_errors(r) for r in response_texts],
                                        [count_tool_responses(r) for r in response_texts], err_pen,
                                        [count_answers(r) for r in response_texts]))
    metrics["down_sampling/small_group_dropped_num"] = 0

    keep = np.ones(size, dtype=bool)
    if cfg.do_down_sampling and cfg.reject_equal_reward:
        keep &= reject_equal_reward(scores, uids)
    n = cfg.down_sample_to_n
    if cfg.do_down_sampling and n > 0:
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
    rows = np.flatnonzero(keep).tolist()
    metrics["down_sampling/after_sampling_trace_num"] = len(rows)
    return (rows or None), metrics
