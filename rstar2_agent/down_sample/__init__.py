"""GRPO-RoC down-sampling (rStar2-Agent): reject groups with equal rewards and keep ``n`` traces per group with
Resample-on-Correct. Pure functions on lists and numpy arrays (no torch, no verl); `select_rows` is the entry point.
"""

from rstar2_agent.down_sample.batch import DownSamplingConfig, rollout_text_metrics, select_rows
from rstar2_agent.down_sample.groups import group_indices
from rstar2_agent.down_sample.penalty import (answer_format_penalty, count_answers, count_assistant_turns,
                                              count_tool_errors, count_tool_responses, error_ratio_penalty,
                                              roc_penalty)
from rstar2_agent.down_sample.reject_equal import reject_equal_reward, reject_equal_reward_metrics
from rstar2_agent.down_sample.roc import roc_quotas, select_roc

__all__ = ["DownSamplingConfig", "rollout_text_metrics", "select_rows", "group_indices", "answer_format_penalty",
           "count_answers", "count_assistant_turns", "count_tool_errors", "count_tool_responses",
           "error_ratio_penalty", "roc_penalty", "reject_equal_reward", "reject_equal_reward_metrics", "roc_quotas",
           "select_roc"]
