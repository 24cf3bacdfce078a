"""From a scored rollout, as verl's V1 trainer stores it, to the rows GRPO-RoC keeps and the rollout metrics.

No verl trainer or TransferQueue here; `roc_trainer.py` fetches these fields for a step's keys and calls:

    uids          ["p", "p", "q", "q"]                   the prompt group of each trace
    responses     [[ids...], ...]                        response token ids, unpadded (tool turns included)
    rewards       [1.0, 0.0, 0.0, 0.0]                   a trace's reward: the sum of its rm_scores row
    extra_fields  [{"tool_call_count": 1, ...}, ...]     what our agent loop put in `AgentLoopOutput.extra_fields`

Only the responses are decoded, never the prompts: every trajectory's prompt ends with the header of its first
assistant turn, so turns are counted on `GENERATION_HEADER + response` (`count_assistant_turns`).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

from rstar2_agent.down_sample import DownSamplingConfig, count_assistant_turns, select_rows

GENERATION_HEADER = "<|im_start|>assistant\n"


def rows_to_keep(uids: Sequence[str], responses: Sequence[Sequence[int]], rewards: Sequence[float], tokenizer,
                 cfg: DownSamplingConfig, infra_errors: Optional[Sequence[bool]] = None
                 ) -> tuple[Optional[list[int]], dict[str, float]]:
    """Positions (ascending) that GRPO-RoC keeps, or None when nothing is left; plus the selection metrics.

    Traces flagged in `infra_errors` are never kept (see `select_rows` for the rule)."""
    texts = tokenizer.batch_decode([list(r) for r in responses], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    turns = [count_assistant_turns(text, GENERATION_HEADER) for text in texts]
    return select_rows(uids, texts, turns, rewards, cfg, infra_errors)


def infra_error_flags(extra_fields: Sequence[dict]) -> list[bool]:
    """Per trajectory, whether the agent loop marked it `infra_error` (the sandbox failed one of its calls).

    >>> infra_error_flags([{"infra_error": True}, {"tool_call_count": 1}, None])
    [True, False, False]
    """
    return [bool(f.get("infra_error", False)) if isinstance(f, dict) else False for f in extra_fields]


def rollout_metrics(extra_fields: Sequence[dict]) -> dict[str, float]:
    """Tool and finish-reason rates of a step from the agent loop's per-trajectory counters.

    A judge that dies mid-run shows here as `rollout/infra_errors`, the number of trajectories the sandbox failed
    (they are not counted as tool errors, and training leaves them out); `rollout/tool_error_ratio` is the
    model's own failures.

    >>> m = rollout_metrics([{"tool_call_count": 2, "tool_error_count": 1, "finish_reason": "stop"},
    ...                      {"tool_call_count": 0, "tool_error_count": 0, "finish_reason": "length"},
    ...                      {"tool_call_count": 1, "tool_error_count": 0, "finish_reason": "infra_error",
    ...                       "infra_error": True}])
    >>> m["rollout/tool_calls_mean"], m["rollout/tool_error_ratio"], m["rollout/infra_errors"]
    (1.0, 0.3333333333333333, 1)
    """
    fields = [f for f in extra_fields if isinstance(f, dict)]
    if not fields:
        return {}
    n = len(fields)
    calls = sum(int(f.get("tool_call_count", 0)) for f in fields)
    metrics = {
        "rollout/tool_calls_mean": calls / n,
        "rollout/tool_error_ratio": sum(int(f.get("tool_error_count", 0)) for f in fields) / calls if calls else 0.0,
        "rollout/parse_errors_mean": sum(int(f.get("parse_error_count", 0)) for f in fields) / n,
        "rollout/infra_errors": sum(infra_error_flags(fields)),
    }
    for reason, count in Counter(str(f.get("finish_reason") or "unknown") for f in fields).items():
        metrics[f"rollout/finish_reason/{reason}"] = count / n
    return metrics
