"""GRPO-RoC down-sampling: reject-equal, RoC penalties, per-group selection, and the batch step (`select_rows`).

Expected values are worked out by hand in the comments next to them.
"""

from __future__ import annotations

import doctest
import random

import numpy as np
import pytest
from omegaconf import OmegaConf
from rstar2_agent.engine.tiny import build_tokenizer

import rstar2_agent.down_sample as ds
from rstar2_agent.down_sample import (DownSamplingConfig, answer_format_penalty, count_answers,
                                      count_assistant_turns, count_tool_errors, count_tool_responses,
                                      error_ratio_penalty, group_indices, reject_equal_reward,
                                      reject_equal_reward_metrics, roc_penalty, roc_quotas, select_roc, select_rows)
from rstar2_agent.down_sample import batch as batch_mod
from rstar2_agent.down_sample import groups as groups_mod
from rstar2_agent.down_sample import penalty as penalty_mod
from rstar2_agent.down_sample import reject_equal as reject_mod
from rstar2_agent.down_sample import roc as roc_mod
from rstar2_agent.rollout import load_chat_template, render

# ---------------------------------------------------------------------------------------------------------------
# Realistic trajectories: what the model writes after the prompt's "<|im_start|>assistant\n<reason>", plus the
# tool turns the agent loop inserts (the chat template's format).

CALL = ('<tool_call>\n{"name": "python_code_with_standard_io", "arguments": {"code": "print(6*7)", "input": ""}}\n'
        "</tool_call><|im_end|>\n")
OK_OUT = "Tool call success\nstdout: 42\nexecution time: 0.01s"
ERR_OUT = "Tool call failure\nreason: \nstderr: NameError at line 1: name 'x' is not defined"
TIMEOUT_OUT = "Tool call failure\nreason: timeout"
FINAL = "So the product is 42.</reason> <answer>\\boxed{42}</answer><|im_end|>"


def tool_turn(output: str) -> str:
    return ("<|im_start|>user\n<tool_response>\n" + output + "\n</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n<reason>")


# name: text, (tool responses, tool errors, answers, assistant turns incl. the first, error pen, format pen)
T_OK = "Let me compute 6*7.\n" + CALL + tool_turn(OK_OUT) + FINAL                # 2 turns, 1 call, ok
T_ERR = "Let me compute 6*7.\n" + CALL + tool_turn(ERR_OUT) + FINAL              # 2 turns, 1 call, NameError
T_NOTOOL = "6*7 = 42.</reason> <answer>\\boxed{42}</answer><|im_end|>"          # 1 turn, no call
T_TWOANS = "A guess: <answer>\\boxed{40}</answer>\n" + CALL + tool_turn(OK_OUT) + FINAL  # 2 turns, 2 answers
T_NOANS = "I am not sure.</reason> The result is 42.<|im_end|>"                 # 1 turn, no answer
T_MIXED = ("First try.\n" + CALL + tool_turn(ERR_OUT) + "Fix the typo.\n" + CALL + tool_turn(OK_OUT)
           + FINAL)                                                               # 3 turns, 2 calls, 1 error

EXPECTED = {
    # text: (responses, errors, answers, turns, error penalty, format penalty with the real turn count)
    "T_OK": (T_OK, 1, 0, 1, 2, 0.0, 0.0),          # fmt (1-1)/2
    "T_ERR": (T_ERR, 1, 1, 1, 2, 1.0, 0.0),        # err 1/1
    "T_NOTOOL": (T_NOTOOL, 0, 0, 1, 1, 0.5, 0.0),  # no tool response: 0.5; fmt (1-1)/1
    "T_TWOANS": (T_TWOANS, 1, 0, 2, 2, 0.0, 0.5),  # fmt (2-1)/2
    "T_NOANS": (T_NOANS, 0, 0, 0, 1, 0.5, 1.0),    # no <answer>: 1.0
    "T_MIXED": (T_MIXED, 2, 1, 1, 3, 0.5, 0.0),    # err 1/2; fmt (1-1)/3
}


def prompt_text(question: str = "What is 6*7?") -> str:
    return render(build_tokenizer(), [{"role": "user", "content": question}], load_chat_template(),
                  add_generation_prompt=True)


# ---------------------------------------------------------------------------------------------------------------
# Doctests (every public function's worked example)

@pytest.mark.parametrize("module", [ds, groups_mod, reject_mod, penalty_mod, roc_mod, batch_mod])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert module is ds or result.attempted > 0


def test_every_public_function_has_a_worked_example():
    for name in ds.__all__:
        obj = getattr(ds, name)
        assert ">>>" in (obj.__doc__ or ""), name


# ---------------------------------------------------------------------------------------------------------------
# groups

def test_group_indices_first_appearance_order_and_non_adjacent_rows():
    groups = group_indices(np.array(["u2", "u1", "u2", "u3", "u1"], dtype=object))
    assert list(groups) == ["u2", "u1", "u3"]
    assert [g.tolist() for g in groups.values()] == [[0, 2], [1, 4], [3]]
    assert group_indices([]) == {}


# ---------------------------------------------------------------------------------------------------------------
# reject-equal

def test_reject_equal_reward_four_trace_groups():
    # p: 1 0 1 0 mixed (kept); q: 0 0 0 0 (dropped); r: 1 1 1 1 (dropped); s: 0 1 1 1 (kept)
    scores = [1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    uids = np.array([u for u in "pqrs" for _ in range(4)], dtype=object)
    assert reject_equal_reward(scores, uids).tolist() == [True] * 4 + [False] * 8 + [True] * 4
    assert reject_equal_reward_metrics(scores, uids) == {
        "reject_equal_reward/solve_non_equal_total": 2,
        "reject_equal_reward/solve_equal_total": 2,
        "reject_equal_reward/solve_equal_total_ratio": 0.5,
        "reject_equal_reward/solve_equal_zeros": 1,
        "reject_equal_reward/solve_equal_non_all_zeros": 1,
    }


def test_reject_equal_reward_interleaved_groups_tolerance_and_singletons():
    # a: rows 0, 2 (1.0 and 1.0+1e-9: allclose, equal); b: rows 1, 3 (0.0 and 0.5: mixed); c: row 4 (alone: equal)
    scores = np.array([1.0, 0.0, 1.0 + 1e-9, 0.5, -1.0])
    uids = ["a", "b", "a", "b", "c"]
    assert reject_equal_reward(scores, uids).tolist() == [False, True, False, True, False]
    m = reject_equal_reward_metrics(scores, uids)
    assert m["reject_equal_reward/solve_non_equal_total"] == 1
    assert m["reject_equal_reward/solve_equal_total"] == 2
    assert m["reject_equal_reward/solve_equal_total_ratio"] == pytest.approx(2 / 3)
    assert m["reject_equal_reward/solve_equal_zeros"] == 0            # a is all 1, c is -1: neither is zero
    assert m["reject_equal_reward/solve_equal_non_all_zeros"] == 2


def test_reject_equal_reward_empty_and_bad_input():
    assert reject_equal_reward([], []).tolist() == []
    assert reject_equal_reward_metrics([], [])["reject_equal_reward/solve_equal_total_ratio"] == 0.0
    with pytest.raises(ValueError, match="2 scores but 3 uids"):
        reject_equal_reward([1, 0], ["a", "a", "b"])
    with pytest.raises(ValueError, match="1-D"):
        reject_equal_reward([[1, 0]], ["a"])


# ---------------------------------------------------------------------------------------------------------------
# penalties

@pytest.mark.parametrize("name", list(EXPECTED))
def test_trace_counts_and_penalties(name):
    text, responses, errors, answers, turns, err_pen, fmt_pen = EXPECTED[name]
    prompt = prompt_text()
    assert count_tool_responses(text) == responses
    assert count_tool_errors(text) == errors
    assert count_answers(text) == answers
    assert count_assistant_turns(text, prompt) == turns
    assert count_assistant_turns(text) == turns - 1          # upstream's count misses the first turn
    assert error_ratio_penalty(text) == err_pen
    assert answer_format_penalty(text, num_assistant_turns=turns) == fmt_pen
    assert roc_penalty(text, num_assistant_turns=turns) == err_pen + fmt_pen
    assert roc_penalty(text, error_ratio=False, num_assistant_turns=turns) == fmt_pen
    assert roc_penalty(text, answer_format=False) == err_pen
    assert roc_penalty(text, error_ratio=False, answer_format=False) == 0.0


def test_format_penalty_upstream_quirk_versus_real_turn_count():
    # Upstream (num_assistant_turns=None) counts turns in the response only. A tool-free answer has no
    # "<|im_start|>assistant" in its response, so it always costs 1.0; a 2-turn answer with two <answer>s
    # counts 1 turn: (2-1)/1 = 1.0 instead of (2-1)/2 = 0.5. With the real counts: 0.0 and 0.5.
    assert answer_format_penalty(T_NOTOOL) == 1.0
    assert answer_format_penalty(T_NOTOOL, num_assistant_turns=1) == 0.0
    assert answer_format_penalty(T_TWOANS) == 1.0
    assert answer_format_penalty(T_TWOANS, num_assistant_turns=2) == 0.5
    assert answer_format_penalty(T_OK) == 0.0                 # (1-1)/1: one answer is free either way
    assert roc_penalty(T_NOTOOL) == 1.5                       # 0.5 (no tool) + 1.0 (quirk)
    assert roc_penalty(T_NOTOOL, num_assistant_turns=1) == 0.5


def test_full_prompt_text_would_count_the_prompts_format_instructions():
    # Why tags are counted in the response only: the default system prompt and the user prefix each quote
    # "<answer> </answer>" and "<answer> answer here </answer>", 4 closed pairs in all.
    prompt = prompt_text()
    assert count_answers(prompt) == 4
    full = prompt + T_OK
    assert count_assistant_turns(full) == 2                  # the turn count itself would be right...
    assert answer_format_penalty(full) == 1.0                # ...but 5 answers: min((5-1)/2, 1) instead of 0


def test_count_assistant_turns_ignores_finished_turns_in_the_prompt():
    # A prompt holding a complete earlier assistant turn (few-shot), then the open generation header.
    prompt = ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<reason>hello</reason><|im_end|>\n"
              "<|im_start|>user\nWhat is 6*7?<|im_end|>\n<|im_start|>assistant\n<reason>")
    assert count_assistant_turns(T_MIXED, prompt) == 3
    assert count_assistant_turns("unfinished, no end token", prompt) == 0


@pytest.mark.parametrize("text, expected", [
    ("no tags at all", 1.0),
    ("<answer>42", 1.0),                                      # no closing tag
    ("42</answer>", 1.0),                                     # no opening tag
    ("<answer><answer>42</answer>", 1.0),                      # 2 open tags, 1 closed pair
    ("<answer>1</answer></answer>", 1.0),                      # stray closing tag
    ("<answer>1</answer>", 0.0),                               # (1-1)/2
    ("<answer>1</answer><answer>2</answer>", 0.5),             # (2-1)/2
    ("<answer>1</answer><answer>2</answer><answer>3</answer>", 1.0),              # (3-1)/2
    ("<answer>1</answer><answer>2</answer><answer>3</answer><answer>4</answer>", 1.0),  # min(3/2, 1)
    ("<answer>\n\\boxed{1}\n</answer>", 0.0),                  # pairs span lines
])
def test_answer_format_rules(text, expected):
    assert answer_format_penalty(text, num_assistant_turns=2) == expected


def test_answer_format_zero_turns_and_bad_turn_argument():
    assert answer_format_penalty("<answer>1</answer>", num_assistant_turns=0) == 1.0
    assert answer_format_penalty("<answer>1</answer><|im_end|>") == 1.0     # no header in the response
    with pytest.raises(ValueError, match="non-negative"):
        answer_format_penalty("<answer>1</answer>", num_assistant_turns=-1)


def test_tool_error_rule_is_a_case_insensitive_substring():
    blocks = "".join("<tool_response>\n" + out + "\n</tool_response>" for out in (
        ERR_OUT,                                   # "NameError": counted
        "Tool call success\nstdout: ERROR 404",    # the program printed it: counted
        TIMEOUT_OUT,                               # a failure that never says "error": not counted (upstream rule)
        OK_OUT,
    ))
    assert count_tool_responses(blocks) == 4
    assert count_tool_errors(blocks) == 2
    assert error_ratio_penalty(blocks) == 0.5
    # An unclosed block is not a tool response; a lone closed one with an error is 1/1.
    assert count_tool_responses("<tool_response>\nstderr: Error") == 0
    assert error_ratio_penalty("<tool_response>\nstderr: Error") == 0.5
    assert error_ratio_penalty("<tool_response>ValueError</tool_response>") == 1.0


# ---------------------------------------------------------------------------------------------------------------
# per-group selection

def test_select_roc_four_trace_worked_example():
    # rewards 0 1 1 0, penalties .9 1.5 .5 .1; n=2: quotas round(2*2/4)=1 and 1.
    # Negatives [0, 3] in order -> 0; positives by penalty [2 (.5), 1 (1.5)] -> 2.
    assert select_roc([0, 1, 1, 0], [0.9, 1.5, 0.5, 0.1], 2) == [0, 2]
    # n=3: 1.5 -> 2 and 1.5 -> 2 (sum 4): the surplus comes off the positives -> negatives 0, 3 + positive 2
    assert select_roc([0, 1, 1, 0], [0.9, 1.5, 0.5, 0.1], 3) == [0, 2, 3]
    # n=1: 0.5 -> 0 and 0.5 -> 0 (sum 0): the gap is filled with a negative -> 0
    assert select_roc([0, 1, 1, 0], [0.9, 1.5, 0.5, 0.1], 1) == [0]
    # n=1 with min_pos=1: z=0 <= min(-1..) no; p=0 <= min(1, 2)=1 -> p=1, z=0 -> best positive 2
    assert select_roc([0, 1, 1, 0], [0.9, 1.5, 0.5, 0.1], 1, min_pos=1) == [2]


def _thirty_two(neg_rows: list[int]):
    """32 traces, negatives at `neg_rows`; positive penalties: 0 on rows 0-9 (positives only), .5 on rows
    10-19, 1.5 on rows 20-31."""
    rewards = [0.0 if i in neg_rows else 1.0 for i in range(32)]
    penalties = [0.0 if i < 10 else 0.5 if i < 20 else 1.5 for i in range(32)]
    return rewards, penalties


def test_select_roc_32_to_16_with_min_2_2():
    # 3 negatives (rows 5, 17, 30), 29 positives. z = round(3*16/32 = 1.5) = 2 <= min(2, 3) -> z = 2, p = 14.
    # Negatives: 5, 17. Positives: penalty 0 on rows 0-9 minus 5 (9 rows), then penalty .5 rows 10-19
    # minus 17 in order: 10, 11, 12, 13, 14 -> 14 positives.
    rewards, penalties = _thirty_two([5, 17, 30])
    got = select_roc(rewards, penalties, 16, 2, 2)
    assert got == sorted([5, 17] + [0, 1, 2, 3, 4, 6, 7, 8, 9] + [10, 11, 12, 13, 14])
    assert len(got) == 16


def test_select_roc_32_to_16_few_negatives_or_positives():
    # 1 negative (row 31): z = round(.5) = 0 <= min(2, 1) = 1 -> z = 1, p = 15.
    rewards, penalties = _thirty_two([31])
    assert select_roc(rewards, penalties, 16, 2, 2) == sorted([31] + list(range(15)))
    # 31 negatives, 1 positive (row 20): z = round(15.5) = 16 (half to even), p = round(.5) = 0;
    # z <= 2? no. p <= min(2, 1) = 1 -> p = 1, z = 15 -> the first 15 negatives and row 20.
    rewards = [1.0 if i == 20 else 0.0 for i in range(32)]
    assert select_roc(rewards, [0.0] * 32, 16, 2, 2) == sorted(list(range(15)) + [20])
    # 2 negatives (rows 0, 1): z = round(1) = 1 <= 2 -> z = 2, p = 14 -> positives 2..15
    rewards, penalties = _thirty_two([0, 1])
    assert select_roc(rewards, penalties, 16, 2, 2) == list(range(16))
    # 16/16: z = p = 8, minimums do not fire. Negatives are the even rows, the first 8: 0..14.
    # Positives (odd rows) by penalty: 1, 3, 5, 7, 9 (0), 11, 13, 15 (.5).
    rewards, penalties = _thirty_two(list(range(0, 32, 2)))
    assert select_roc(rewards, penalties, 16, 2, 2) == list(range(16))


@pytest.mark.parametrize("num_neg, num_pos, n, mins, expected, raw_sum", [
    # (neg, pos, n, (min_neg, min_pos)) -> (z, p); raw_sum = round(neg*n/size) + round(pos*n/size)
    (3, 3, 3, (-1, -1), (2, 1), 4),     # 1.5 -> 2, 1.5 -> 2: both up, trim a positive
    (1, 5, 3, (-1, -1), (1, 2), 2),     # 0.5 -> 0, 2.5 -> 2: both down, add a negative
    (5, 5, 5, (-1, -1), (3, 2), 4),     # 2.5 -> 2, 2.5 -> 2
    (3, 7, 5, (-1, -1), (2, 3), 6),     # 1.5 -> 2, 3.5 -> 4
    (3, 7, 5, (1, 1), (2, 3), 6),       # minimums already met, do not fire: same repair
    (7, 3, 5, (1, 1), (4, 1), 6),       # 3.5 -> 4, 1.5 -> 2: a positive goes, p = 1 >= min_pos
    (3, 3, 3, (2, 1), (2, 1), 4),       # z = 2 <= min(2, 3): rule sets p = 3 - 2 = 1
    (3, 3, 3, (1, 2), (1, 2), 4),       # p = 2 <= min(2, 3): rule sets z = 3 - 2 = 1
    (3, 5, 4, (-1, -1), (2, 2), 4),     # 1.5 -> 2, 2.5 -> 2: halves that do sum to n, nothing to repair
    (5, 27, 16, (2, 2), (2, 14), 16),   # 2.5 -> 2 <= 2: z = 2, p = 14
    (7, 25, 16, (2, 2), (4, 12), 16),   # 3.5 -> 4, 12.5 -> 12
    (0, 6, 3, (2, 0), (0, 3), 3),       # no negatives: z = 0 <= min(2, 0) -> z = 0, p = 3
    (6, 0, 3, (0, 2), (3, 0), 3),       # no positives
])
def test_roc_quotas_rounding_edges(num_neg, num_pos, n, mins, expected, raw_sum):
    size = num_neg + num_pos
    assert round(num_neg * n / size) + round(num_pos * n / size) == raw_sum
    assert roc_quotas(num_neg, num_pos, n, *mins) == expected


def test_select_roc_both_quotas_round_up_or_down():
    # 6 traces, n = 3. Rewards 1 0 1 0 1 0 (3/3): 1.5 -> 2 each; trimmed to 2 negatives (1, 3) and the best
    # positive (penalties .7 .2 .9 -> row 2).
    assert select_roc([1, 0, 1, 0, 1, 0], [0.7, 9, 0.2, 9, 0.9, 9], 3) == [1, 2, 3]
    # Rewards 1 1 0 1 1 1 (1 negative, 5 positives): 0.5 -> 0 and 2.5 -> 2; filled with the negative (row 2)
    # plus the 2 best positives (penalties .3 .1 _ .4 .1 .2 -> rows 1, 4).
    assert select_roc([1, 1, 0, 1, 1, 1], [0.3, 0.1, 0.0, 0.4, 0.1, 0.2], 3) == [1, 2, 4]


def test_select_roc_penalty_ties_keep_group_order():
    # 4 positives with equal penalty and 4 negatives, n = 4: 2 + 2. Positives 1, 3, 5, 7 tie: take 1, 3.
    rewards = [0, 1, 0, 1, 0, 1, 0, 1]
    assert select_roc(rewards, [0.5] * 8, 4) == [0, 1, 2, 3]
    # Ties only among the best: penalties of positives 1:.5 3:.2 5:.2 7:.2 -> 3 and 5.
    assert select_roc(rewards, [0, 0.5, 0, 0.2, 0, 0.2, 0, 0.2], 4) == [0, 2, 3, 5]


def test_select_roc_negatives_ignore_their_penalty():
    # Negatives 0, 1, 2, 3 with penalties 2, 2, 0, 0: still the first two are kept.
    assert select_roc([0, 0, 0, 0, 1, 1, 1, 1], [2, 2, 0, 0, 0, 0, 0, 0], 4) == [0, 1, 4, 5]


def test_select_roc_all_positive_and_all_negative_groups():
    # All positive: the 3 lowest penalties (.1 row 3, .2 rows 1 and 5 -> 1 first). Minimums cannot be met.
    assert select_roc([1] * 6, [0.9, 0.2, 0.8, 0.1, 0.7, 0.2], 3, min_neg=2, min_pos=1) == [1, 3, 5]
    # All negative (reward <= 0, negative rewards included): the first 3.
    assert select_roc([0, -1, 0, -0.5, 0, 0], [0] * 6, 3, min_neg=1, min_pos=2) == [0, 1, 2]


def test_select_roc_zero_is_negative_and_small_positive_is_positive():
    # negatives 0, 2 (reward exactly 0); positives 1, 3 (reward 1e-6): one of each
    assert select_roc([0.0, 1e-6, 0.0, 1e-6], [0, 0, 0, 0], 2) == [0, 1]


def test_select_roc_small_groups_and_no_selection():
    assert select_roc([1, 0, 1], [0, 0, 0], 4) == [0, 1, 2]            # fewer than n: whole
    assert select_roc([1, 0, 1, 0], [0, 0, 0, 0], 4) == [0, 1, 2, 3]   # exactly n: whole
    assert select_roc([1, 0, 1, 0], [0, 0, 0, 0], 0) == [0, 1, 2, 3]   # n <= 0: no selection
    assert select_roc([1, 0, 1, 0], [0, 0, 0, 0], -1, 5, 5) == [0, 1, 2, 3]  # minimums unchecked then
    assert select_roc([], [], 4) == []


def test_select_roc_argument_errors():
    with pytest.raises(ValueError, match="min_neg \\+ min_pos must be <= n"):
        select_roc([0, 1, 0, 1, 0], [0] * 5, 3, min_neg=2, min_pos=2)
    with pytest.raises(ValueError, match="2 rewards but 3 penalties"):
        select_roc([0, 1], [0, 0, 0], 1)
    with pytest.raises(ValueError, match="finite"):
        select_roc([0, float("nan"), 1], [0, 0, 0], 1)
    with pytest.raises(ValueError, match="finite"):
        select_roc([0, 1, 1], [0, float("inf"), 0], 1)
    with pytest.raises(ValueError, match="1-D"):
        select_roc([[0, 1]], [[0, 0]], 1)
    for bad in (2.0, True, "2"):
        with pytest.raises(TypeError, match="n must be an int"):
            select_roc([0, 1, 0], [0, 0, 0], bad)
    with pytest.raises(TypeError, match="min_pos must be an int"):
        select_roc([0, 1, 0], [0, 0, 0], 2, min_pos=None)
    with pytest.raises(ValueError, match="0 < n < group size"):
        roc_quotas(2, 2, 4, -1, -1)


def test_select_roc_properties_over_many_groups():
    """Exactly n, minimums where available, the lowest-penalty positives, the first negatives, and the
    rounded ratio within one trace."""
    rng = random.Random(1)
    for _ in range(3000):
        size = rng.randint(2, 40)
        n = rng.randint(1, size - 1)
        min_neg = rng.randint(-1, n)
        min_pos = rng.randint(-1, n - max(min_neg, 0))
        rewards = [rng.choice([0.0, 1.0]) for _ in range(size)]
        penalties = [rng.choice([0.0, 0.5, 1.0, 1.5, 2.0]) for _ in range(size)]
        got = select_roc(rewards, penalties, n, min_neg, min_pos)
        neg = [i for i in range(size) if rewards[i] <= 0]
        pos = [i for i in range(size) if rewards[i] > 0]
        kept_neg = [i for i in got if rewards[i] <= 0]
        kept_pos = [i for i in got if rewards[i] > 0]
        assert len(got) == n == len(set(got))
        assert len(kept_neg) >= min(max(min_neg, 0), len(neg))
        assert len(kept_pos) >= min(max(min_pos, 0), len(pos))
        assert kept_neg == neg[: len(kept_neg)]
        assert kept_pos == sorted(sorted(pos, key=lambda i: penalties[i])[: len(kept_pos)])
        if len(kept_neg) > max(min_neg, 0) and len(kept_pos) > max(min_pos, 0):   # no minimum in play
            assert abs(len(kept_neg) - len(neg) * n / size) <= 1


# ---------------------------------------------------------------------------------------------------------------
# batch level

def make_rollout(groups: list[tuple[str, str, list[tuple[str, float]]]]) -> tuple[list, list, list, list]:
    """(uids, response texts, assistant turns, rewards) of `groups`: (uid, question, [(response text, reward)])
    in batch order. Turns are counted over the real chat-template prompt and the response."""
    uids, texts, turns, rewards = [], [], [], []
    for uid, question, traces in groups:
        prompt = prompt_text(question)
        for text, reward in traces:
            uids.append(uid)
            texts.append(text)
            turns.append(count_assistant_turns(text, prompt))
            rewards.append(float(reward))
    return uids, texts, turns, rewards


# Four prompts, eight traces each (rows A: 0-7, B: 8-15, C: 16-23, D: 24-31).
GROUP_A = [(T_NOANS, 0), (T_ERR, 0), (T_TWOANS, 1), (T_OK, 0), (T_NOTOOL, 1), (T_NOTOOL, 0), (T_OK, 1),
           (T_TWOANS, 0)]
GROUP_B = [(T_OK, 1)] * 4 + [(T_MIXED, 1)] * 4                  # all correct
GROUP_C = [(T_NOANS, 0)] * 4 + [(T_ERR, 0)] * 4                 # all wrong
GROUP_D = [(T_OK, 0), (T_NOTOOL, 0), (T_NOANS, 0), (T_OK, 0), (T_ERR, 0), (T_ERR, 1), (T_MIXED, 0),
           (T_NOTOOL, 0)]


def four_groups():
    return make_rollout([("A", "What is 6*7?", GROUP_A), ("B", "Compute six times seven.", GROUP_B),
                         ("C", "Find 6*7.", GROUP_C), ("D", "What is 7 times 6, exactly?", GROUP_D)])


RECIPE = dict(do_down_sampling=True, down_sample_to_n=4, reject_equal_reward=True, roc_error_ratio=True,
              roc_answer_format=True, min_zero_reward_trace_num=1, min_non_zero_reward_trace_num=1)

# Over all 32 traces: OK x8, ERR x7, TWOANS x2, NOTOOL x4, NOANS x6, MIXED x5.
# Tool responses 8+7+2+10 = 27, errors 7 (ERR) + 5 (MIXED) = 12 -> 12/27.
# Error penalties: 7*1 + 4*.5 + 6*.5 + 5*.5 = 14.5 -> 14.5/32.
# Answers: 8+7+4+4+0+5 = 28 -> 28/32; zero: 6 (NOANS); one: 8+7+4+5 = 24; more than one: 2.
EXPECTED_METRICS = {
    "down_sampling/before_sampling_trace_num": 32,
    "reject_equal_reward/solve_non_equal_total": 2,
    "reject_equal_reward/solve_equal_total": 2,
    "reject_equal_reward/solve_equal_total_ratio": 0.5,
    "reject_equal_reward/solve_equal_zeros": 1,
    "reject_equal_reward/solve_equal_non_all_zeros": 1,
    "roc_error_ratio/global_err_ratio": 12 / 27,
    "roc_error_ratio/penalty_weight": 14.5 / 32,
    "roc_answer_format/answer_per_rollout_mean": 28 / 32,
    "roc_answer_format/zero_answer_count": 6,
    "roc_answer_format/one_answer_count": 24,
    "roc_answer_format/gt_one_answer_count": 2,
}


def test_select_rows_recipe_like():
    # A: negatives 0 1 3 5 7, positives 2 (TWOANS: 0 + .5), 4 (NOTOOL: .5 + 0), 6 (OK: 0).
    #    z = round(5*4/8 = 2.5) = 2, p = round(1.5) = 2 -> negatives 0, 1; positives 6, then 2 (ties 4, earlier).
    # B, C: all equal, rejected.
    # D: negatives all but 5; z = round(3.5) = 4, p = round(.5) = 0 <= min(1, 1) -> p = 1, z = 3
    #    -> rows 24, 25, 26 and 29.
    rows, m = select_rows(*four_groups(), DownSamplingConfig(**RECIPE))
    assert rows == [0, 1, 2, 6, 24, 25, 26, 29]
    for key, value in EXPECTED_METRICS.items():
        assert m[key] == pytest.approx(value), key
    assert m["down_sampling/after_sampling_trace_num"] == 8
    assert m["down_sampling/small_group_dropped_num"] == 0


@pytest.mark.parametrize("error_ratio, answer_format, expected_a", [
    (True, False, [0, 1, 2, 6]),    # A's positives: 2 -> 0, 4 -> .5, 6 -> 0: rows 2 and 6
    (False, True, [0, 1, 4, 6]),    # 2 -> .5 (two answers over 2 turns), 4 -> 0 (one turn, real count), 6 -> 0
    (False, False, [0, 1, 2, 4]),   # all 0: group order
])
def test_select_rows_penalty_switches(error_ratio, answer_format, expected_a):
    cfg = DownSamplingConfig(**{**RECIPE, "roc_error_ratio": error_ratio, "roc_answer_format": answer_format})
    rows, _ = select_rows(*four_groups(), cfg)
    assert rows == expected_a + [24, 25, 26, 29]


def test_select_rows_off_keeps_everything_and_still_measures():
    rows, m = select_rows(*four_groups(), DownSamplingConfig())
    assert rows == list(range(32))
    for key, value in EXPECTED_METRICS.items():
        assert m[key] == pytest.approx(value), key
    assert m["down_sampling/after_sampling_trace_num"] == 32
    # Selection settings without the master switch change nothing either.
    rows, _ = select_rows(*four_groups(), DownSamplingConfig(**{**RECIPE, "do_down_sampling": False}))
    assert rows == list(range(32))


def test_select_rows_reject_only_and_roc_only():
    # Reject-equal only: groups A and D (16 rows) stay.
    rows, m = select_rows(*four_groups(), DownSamplingConfig(do_down_sampling=True, reject_equal_reward=True))
    assert rows == list(range(8)) + list(range(24, 32))
    assert m["down_sampling/after_sampling_trace_num"] == 16
    # RoC only: the equal groups get 4 each too. B (all positive, penalties OK 0 x4, MIXED .5 x4): rows 8-11.
    # C (all negative): the first 4, rows 16-19.
    rows, m = select_rows(*four_groups(), DownSamplingConfig(**{**RECIPE, "reject_equal_reward": False}))
    assert rows == [0, 1, 2, 6, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 29]
    assert m["down_sampling/after_sampling_trace_num"] == 16


def test_select_rows_keeps_uneven_groups_whole_without_roc():
    # No RoC (n = -1): groups of 6, 4, 4 mixed traces (14) all stay; verl pads the batch to its world size.
    six = [(T_OK, 1), (T_ERR, 0)] * 3
    four = [(T_OK, 1), (T_ERR, 0)] * 2
    rows, _ = select_rows(*make_rollout([("P", "p", six), ("Q", "q", four), ("R", "r", four)]),
                          DownSamplingConfig(do_down_sampling=True, reject_equal_reward=True))
    assert rows == list(range(14))


def test_select_rows_drops_groups_smaller_than_n():
    # n = 4; group S has only 3 traces (mixed) and is dropped; A keeps its 4.
    small = [(T_OK, 1), (T_ERR, 0), (T_NOTOOL, 0)]
    rows, m = select_rows(*make_rollout([("A", "a", GROUP_A), ("S", "s", small)]), DownSamplingConfig(**RECIPE))
    assert rows == [0, 1, 2, 6]
    assert m["down_sampling/small_group_dropped_num"] == 1


def test_select_rows_nothing_left_is_none():
    rows, m = select_rows(*make_rollout([("B", "b", GROUP_B), ("C", "c", GROUP_C)]), DownSamplingConfig(**RECIPE))
    assert rows is None
    assert m["down_sampling/after_sampling_trace_num"] == 0
    assert m["reject_equal_reward/solve_equal_total_ratio"] == 1.0


def test_select_rows_groups_need_not_be_contiguous():
    # Rows alternate between A and D (A on even rows). Same selection as before, mapped to the new rows:
    # A's traces 0 1 2 6 -> rows 0 2 4 12; D's 0 1 2 5 -> rows 1 3 5 11.
    order = [i for pair in zip(range(0, 8), range(24, 32)) for i in pair]
    mixed = [[column[i] for i in order] for column in four_groups()]
    rows, _ = select_rows(*mixed, DownSamplingConfig(**RECIPE))
    assert rows == [0, 1, 2, 3, 4, 5, 11, 12]


def test_select_rows_refuses_columns_of_different_lengths():
    uids, texts, turns, rewards = four_groups()
    with pytest.raises(ValueError, match="32 uids but 31 texts"):
        select_rows(uids, texts[:-1], turns, rewards, DownSamplingConfig())


# ---------------------------------------------------------------------------------------------------------------
# config

def test_config_from_omegaconf_trainer_config():
    cfg = OmegaConf.create({"trainer": {"n_gpus_per_node": 8}, "augmentation": {
        "do_down_sampling": True, "down_sampling_config": {
            "reject_equal_reward": True, "roc_error_ratio": True, "roc_answer_format": True,
            "min_zero_reward_trace_num": 2, "min_non_zero_reward_trace_num": 2, "down_sample_to_n": 16}}})
    assert DownSamplingConfig.from_config(cfg) == DownSamplingConfig(
        do_down_sampling=True, down_sample_to_n=16, reject_equal_reward=True, roc_error_ratio=True,
        roc_answer_format=True, min_zero_reward_trace_num=2, min_non_zero_reward_trace_num=2)


def test_config_defaults_and_partial_blocks():
    assert DownSamplingConfig.from_config(OmegaConf.create({"trainer": {}})) == DownSamplingConfig()
    assert DownSamplingConfig.from_config(None) == DownSamplingConfig()
    partial = DownSamplingConfig.from_config({"augmentation": {"down_sampling_config": {"down_sample_to_n": 8}}})
    assert partial == DownSamplingConfig(down_sample_to_n=8)
    assert [f for f in DownSamplingConfig.__dataclass_fields__] == [
        "do_down_sampling", "down_sample_to_n", "reject_equal_reward", "roc_error_ratio", "roc_answer_format",
        "min_zero_reward_trace_num", "min_non_zero_reward_trace_num"]


def test_config_errors():
    with pytest.raises(ValueError, match="unknown augmentation.down_sampling_config keys \\['down_sample_n'\\]"):
        DownSamplingConfig.from_config({"augmentation": {"down_sampling_config": {"down_sample_n": 16}}})
    with pytest.raises(ValueError, match="must be <= down_sample_to_n"):
        DownSamplingConfig(down_sample_to_n=3, min_zero_reward_trace_num=2, min_non_zero_reward_trace_num=2)
    with pytest.raises(TypeError, match="down_sample_to_n must be an int"):
        DownSamplingConfig(down_sample_to_n="16")
    with pytest.raises(TypeError, match="do_down_sampling must be a bool"):
        DownSamplingConfig(do_down_sampling="false")
    # Without selection (n <= 0) the minimums do not matter.
    assert DownSamplingConfig(min_zero_reward_trace_num=2, min_non_zero_reward_trace_num=2).down_sample_to_n == -1
