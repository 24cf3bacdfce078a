"""The glue between a scored rollout (as verl's V1 trainer stores it) and GRPO-RoC's choice of rows.

The trainer that calls it runs through verl's own classes in tests/test_verl_trainer_path.py."""

from rstar2_agent.down_sample.batch import DownSamplingConfig
from rstar2_agent.down_sample.penalty import count_assistant_turns
from rstar2_agent.trainer.selection import rollout_metrics, rows_to_keep
from rstar2_agent.engine.tiny import build_tokenizer

TOK = build_tokenizer()
PROMPT = TOK.encode("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<reason>", add_special_tokens=False)
OK_TOOL = ("Let me check.\n<tool_call>\n{}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nTool call "
           "success\nstdout: 1\n</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>so </reason> "
           "<answer>\\boxed{1}</answer><|im_end|>")
BAD_TOOL = OK_TOOL.replace("Tool call success\nstdout: 1", "Tool call failure\nstderr: NameError: x")


def scored(text: str, reward: float) -> tuple[list[int], float]:
    return TOK.encode(text, add_special_tokens=False), reward


def test_turns_counted_from_the_response_match_those_over_the_prompt():
    """Only responses are decoded: the generation header stands in for the prompt that ends with it."""
    from rstar2_agent.trainer.selection import GENERATION_HEADER

    prompt = TOK.decode(PROMPT)
    for text in (OK_TOOL, BAD_TOOL, "no turn end", "<reason>x</reason><|im_end|>"):
        assert count_assistant_turns(text, GENERATION_HEADER) == count_assistant_turns(text, prompt)
    assert count_assistant_turns(OK_TOOL, GENERATION_HEADER) == 2


def test_rollout_metrics_ignore_missing_fields():
    assert rollout_metrics([None, "x"]) == {}
    m = rollout_metrics([{"finish_reason": "length"}, {"tool_call_count": 1, "tool_error_count": 1}])
    assert m["rollout/tool_error_ratio"] == 1.0 and m["rollout/finish_reason/unknown"] == 0.5


def test_rows_to_keep_applies_reject_equal_and_roc_in_input_order():
    # group p: 2 correct (one with a failing tool call), 2 wrong; group q: all wrong (equal -> dropped)
    traces = [("p", OK_TOOL, 0.0), ("q", OK_TOOL, 0.0), ("p", BAD_TOOL, 1.0), ("p", OK_TOOL, 1.0),
              ("q", BAD_TOOL, 0.0), ("p", BAD_TOOL, 0.0)]
    responses, scores = zip(*(scored(text, r) for _, text, r in traces))
    cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
                             roc_error_ratio=True, roc_answer_format=True, min_zero_reward_trace_num=1,
                             min_non_zero_reward_trace_num=1)
    rows, metrics = rows_to_keep([u for u, _, _ in traces], responses, scores, TOK, cfg)
    # p keeps its first negative (row 0) and its cleanest positive (row 3: tool call worked)
    assert rows == [0, 3]
    assert metrics["down_sampling/before_sampling_trace_num"] == 6
    assert metrics["down_sampling/after_sampling_trace_num"] == 2


def test_nothing_left_is_none():
    responses, scores = zip(*(scored(OK_TOOL, 1.0) for _ in range(2)))
    cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True)
    rows, _ = rows_to_keep(["p", "p"], responses, scores, TOK, cfg)
    assert rows is None


def test_grpo_advantage_is_computed_on_the_kept_subset():
    """verl's own GRPO advantage, on the rows RoC keeps: each group normalised over its kept traces only."""
    import numpy as np
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    traces = [("p", BAD_TOOL, 0.0), ("p", OK_TOOL, 1.0), ("p", BAD_TOOL, 1.0), ("p", BAD_TOOL, 1.0)]
    responses, scores = zip(*(scored(text, r) for _, text, r in traces))
    cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
                             roc_error_ratio=True, min_zero_reward_trace_num=1, min_non_zero_reward_trace_num=1)
    rows, _ = rows_to_keep(["p"] * 4, responses, scores, TOK, cfg)
    assert rows == [0, 1]  # the negative, and the positive whose tool call worked

    def advantages(keep):
        import torch

        width = max(len(responses[i]) for i in keep)
        mask = torch.tensor([[1] * len(responses[i]) + [0] * (width - len(responses[i])) for i in keep])
        token_scores = torch.zeros(len(keep), width)
        for row, i in enumerate(keep):
            token_scores[row, len(responses[i]) - 1] = scores[i]
        adv, _ = compute_grpo_outcome_advantage(token_scores, mask, np.array(["p"] * len(keep), dtype=object))
        return [round(adv[i][mask[i].bool()][0].item(), 3) for i in range(len(keep))]

    # kept: rewards [0, 1] -> mean 0.5, std 0.707 -> -/+0.707; the whole group [0, 1, 1, 1] would give -1.5/+0.5
    assert advantages(rows) == [-0.707, 0.707]
    assert advantages([0, 1, 2, 3]) == [-1.5, 0.5, 0.5, 0.5]
