"""GRPO-RoC down-sampling (rStar2-Agent): reject groups with equal rewards, keep ``n`` traces per group with
Resample-on-Correct, and keep the batch divisible by the data-parallel world size without cutting a group.

The per-group and per-text functions are pure (numpy and ``re`` only). The batch-level entry points
(:func:`down_sample_batch`, :class:`DownSamplingConfig`) work on a verl ``DataProto`` and are loaded on first use,
so importing this package needs neither torch nor verl.
"""

from rstar2_agent.down_sample.groups import group_indices, groups_to_keep_for_world_size
from rstar2_agent.down_sample.penalty import (answer_format_penalty, count_answers, count_assistant_turns,
                                              count_tool_errors, count_tool_responses, error_ratio_penalty,
                                              roc_penalty)
from rstar2_agent.down_sample.reject_equal import reject_equal_reward, reject_equal_reward_metrics
from rstar2_agent.down_sample.roc import roc_quotas, select_roc

_BATCH_NAMES = ("DownSamplingConfig", "decode_prompt_response_texts", "down_sample_batch", "rollout_text_metrics")

__all__ = ["group_indices", "groups_to_keep_for_world_size", "answer_format_penalty", "count_answers",
           "count_assistant_turns", "count_tool_errors", "count_tool_responses", "error_ratio_penalty",
           "roc_penalty", "reject_equal_reward", "reject_equal_reward_metrics", "roc_quotas", "select_roc",
           *_BATCH_NAMES]


def __getattr__(name):
    if name in _BATCH_NAMES:
        from rstar2_agent.down_sample import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
