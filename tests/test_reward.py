"""Tests for rstar2_agent.reward: answer equivalence, the last-box rule, the process pool, the verl manager.

Module-level imports stay light (no torch/verl): pool workers started with a test function as
score_fn import this module by name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest

from rstar2_agent.reward import RewardPool, RewardPoolClosedError, answers_equal, compute_score, math_verify_equal
from rstar2_agent.reward.pool import RewardPoolBrokenError

# --------------------------------------------------------------------------------------------------
# Score functions run inside pool workers (module level so workers can import them by name)
# --------------------------------------------------------------------------------------------------


def sleepy_score(solution: str, truth: str) -> float:
    """Write this worker's pid to the file `solution` names (if any), sleep ``float(truth)`` seconds, score the pid."""
    if solution:
        with open(solution, "w") as marker:
            marker.write(str(os.getpid()))
    time.sleep(float(truth))
    return float(os.getpid())


def raising_score(solution: str, truth: str) -> float:
    """Raise for the truth "boom", else score the worker's pid."""
    if truth == "boom":
        raise ZeroDivisionError("boom")
    return float(os.getpid())


def pid_score(solution: str, truth: str) -> float:
    return float(os.getpid())


# --------------------------------------------------------------------------------------------------
# 1. Answer equivalence: (model answer, ground truth, expected score)
# --------------------------------------------------------------------------------------------------

PAIRS = [
    # fractions
    (r"\frac{1}{2}", "0.5", 1.0),
    (r"\dfrac{1}{2}", r"\frac12", 1.0),
    ("1/2", r"\frac{1}{2}", 1.0),
    ("0.5", r"\frac12", 1.0),
    (r"\tfrac{3}{4}", "0.75", 1.0),
    (r"\frac{2}{4}", r"\frac{1}{2}", 1.0),
    (r"-\frac{1}{2}", "-0.5", 1.0),
    (r"\frac{-1}{2}", r"-\frac{1}{2}", 1.0),
    (r"\dfrac{3}{4}", r"\frac{3}{4}", 1.0),
    (r"\frac{1}{3}", "0.33", 0.0),
    (r"\frac{1}{2}", r"\frac{1}{3}", 0.0),
    # two non-integers: math-verify's 6-digit rounding is accepted (the "either checker" rule)
    (r"\frac{1}{3}", "0.333333", 1.0),
    # integers vs non-integers: never equal by rounding
    ("2", "2.0", 1.0),
    ("2.50", "2.5", 1.0),
    ("2.0000001", "2", 0.0),
    ("1.9999999", "2", 0.0),
    ("3.5", "3", 0.0),
    # percent: 50\% == 50, but 50\% != 0.5
    (r"50\%", "50", 1.0),
    ("50", r"50\%", 1.0),
    ("50%", "50", 1.0),
    (r"12.5\%", "12.5", 1.0),
    ("0.5", r"50\%", 0.0),
    (r"50\%", "0.5", 0.0),
    (r"40\%", r"50\%", 0.0),
    # degrees
    (r"30^\circ", "30", 1.0),
    (r"30^{\circ}", "30", 1.0),
    ("30", r"30^\circ", 1.0),
    (r"45^\circ", r"30^\circ", 0.0),
    (r"\frac{\pi}{6}", r"30^\circ", 0.0),
    # units and \text{}
    (r"10\text{ cm}", "10", 1.0),
    (r"10\text{ cm}^2", "10", 1.0),
    (r"5\text{ dollars}", "5", 1.0),
    (r"\$5", "5", 1.0),
    (r"\text{Evelyn}", "Evelyn", 1.0),
    (r"\textbf{(C)}", "C", 1.0),
    (r"\text{(A)}", "A", 1.0),
    (r"10\text{ cm}", "12", 0.0),
    # LaTeX spacing and \left / \right
    (r"1,\!000", "1000", 1.0),
    (r"3\,\text{m}", "3", 1.0),
    (r"2\ \pi", r"2\pi", 1.0),
    (r"\left( 1, 2 \right)", "(1,2)", 1.0),
    (r"\left\{ 1,2 \right\}", r"\{1,2\}", 1.0),
    # thousands separators
    ("1,000", "1000", 1.0),
    ("1{,}000{,}000", "1000000", 1.0),
    ("12,345.5", "12345.5", 1.0),
    ("1,000", "1001", 0.0),
    # leading "x =" and trailing period
    ("x=3", "3", 1.0),
    ("x = -2", "-2", 1.0),
    (r"\theta = \frac{\pi}{4}", r"\frac{\pi}{4}", 1.0),
    ("y=5", "6", 0.0),
    ("3.", "3", 1.0),
    (r"\frac{1}{2}.", "0.5", 1.0),
    # intervals: bracket kinds matter, unions are unordered
    ("[1,2)", "[1,2)", 1.0),
    ("(1,2]", "(1, 2]", 1.0),
    (r"(-\infty, 3]", r"(-\infty,3]", 1.0),
    (r"\left[ \frac12, 3 \right)", "[0.5,3)", 1.0),
    (r"(-\infty,3)\cup(4,\infty)", r"(4,\infty)\cup(-\infty,3)", 1.0),
    ("[1,2]", "[1,2)", 0.0),
    # sets are unordered, tuples ordered, bare lists of answers unordered
    (r"\{1,2,3\}", r"\{3,2,1\}", 1.0),
    ("(1,2)", "(1,2)", 1.0),
    (r"(\frac{1}{2}, 3)", "(0.5, 3)", 1.0),
    ("1, 2", "2,1", 1.0),
    ("(1,2)", "(2,1)", 0.0),
    (r"\{1,2\}", r"\{1,3\}", 0.0),
    ("(1,2,3)", "(1,2)", 0.0),
    # symbolic expressions
    (r"\sqrt{18}", r"3\sqrt{2}", 1.0),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", 1.0),
    ("(x+1)^2", "x^2+2x+1", 1.0),
    (r"\pi r^2", r"r^2\pi", 1.0),
    (r"2\pi", r"\pi\cdot 2", 1.0),
    ("10^{3}", "1000", 1.0),
    ("2^{10}", "1024", 1.0),
    ("2^{2^{2}}", "16", 1.0),  # small towers are evaluated
    ("2^{1001}", r"2\cdot 2^{1000}", 1.0),
    (r"9^{9^{9^{9}}}", "1", 0.0),  # astronomically large: never evaluated, rejected fast
    (r"9^{9^{9^{9}}}", r"9^{9^{9^{9}}}", 1.0),  # ...but the same string still matches
    (r"\infty", r"\infty", 1.0),
    (r"\sqrt{2}", "1.414", 0.0),
    ("x^2", "x^3", 0.0),
    ("-3", "3", 0.0),
]


@pytest.mark.parametrize(("answer", "truth", "expected"), PAIRS, ids=[f"{a}|{t}" for a, t, _ in PAIRS])
def test_answer_pairs(answer, truth, expected):
    assert compute_score(f"Reasoning... so the answer is \\boxed{{{answer}}}.", truth) == expected


# Rows that only math-verify accepts (by design of our exact grader).
MATH_VERIFY_ONLY = {(r"\frac{1}{3}", "0.333333")}


@pytest.mark.parametrize(("answer", "truth", "expected"), PAIRS, ids=[f"{a}|{t}" for a, t, _ in PAIRS])
def test_own_grader_alone(answer, truth, expected):
    """Our normalising grader covers every form by itself (math-verify is a second opinion)."""
    if (answer, truth) in MATH_VERIFY_ONLY:
        expected = 0.0
    assert answers_equal(answer, truth) == bool(expected)


@pytest.mark.parametrize(
    ("answer", "truth", "expected"),
    [(r"50\%", "50", True), ("50", r"50\%", True), (r"50\%", "0.5", False), ("0.5", r"50\%", False)],
)
def test_math_verify_percent_handling(answer, truth, expected):
    """Percent signs are removed before math-verify, so its ANTLR-dependent reading never matters."""
    assert math_verify_equal(answer, truth) is expected


def test_antlr_runtime_keeps_hydra_working():
    """The chosen resolution: ANTLR 4.9.3 (hydra/omegaconf need it); math-verify uses its 4.9.3 grammar."""
    from importlib.metadata import version

    from omegaconf import OmegaConf

    assert version("antlr4-python3-runtime").startswith("4.9.3")
    assert OmegaConf.create({"a": "${b}", "b": 1}).a == 1
    assert math_verify_equal(r"\frac{1}{2}", "0.5")


def test_compute_score_works_in_threads():
    """math-verify's signal.alarm limits only work in the main thread; elsewhere they are switched off."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as executor:
        results = list(executor.map(compute_score, [r"\boxed{\frac12}", r"\boxed{3}"], ["0.5", "4"]))
    assert results == [1.0, 0.0]


def test_compute_score_leaves_an_outer_alarm_alone():
    """A caller's own ITIMER_REAL timer (e.g. verl's naive manager) is neither replaced nor cancelled."""
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        assert compute_score(r"\boxed{(x+1)^2}", "x^2+2x+1") == 1.0
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired


def test_table_is_large_and_balanced():
    assert len(PAIRS) >= 60
    assert sum(1 for *_, e in PAIRS if e == 0.0) >= 15


# --------------------------------------------------------------------------------------------------
# 2. Which box counts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        (r"first \boxed{1}, corrected: \boxed{2}", "2", 1.0),
        (r"first \boxed{1}, corrected: \boxed{2}", "1", 0.0),
        (r"nested \boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}", 1.0),
        (r"\fbox{5}", "5", 1.0),
        (r"\boxed {7}", "7", 1.0),
        (r"\boxed{3} and then a cut-off \boxed{4", "3", 1.0),
        ("the answer is 5, no box", "5", 0.0),
        (r"\boxed{}", "5", 0.0),
        ("", "5", 0.0),
        (r"\boxed{5}", r"\boxed{5}", 1.0),  # ground truth stored boxed
    ],
)
def test_last_box_rule(response, truth, expected):
    assert compute_score(response, truth) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # the only box is printed by a tool: no answer
        ("let me compute <tool_call>...</tool_call>\n<tool_response>\n\\boxed{5}\n</tool_response> done", 0.0),
        # the tool's box comes after the model's box: the model's box still counts
        (r"\boxed{3} <tool_response>\boxed{5}</tool_response>", 0.0),
        # the model repeats the answer after the tool output: counts
        (r"<tool_response>\boxed{4}</tool_response> so \boxed{5}", 1.0),
        # a tool block cut off by the length limit runs to the end of the text
        (r"<tool_response>stdout: \boxed{5}", 0.0),
    ],
)
def test_tool_response_boxes_ignored(response, expected):
    assert compute_score(response, "5") == expected


def test_non_string_inputs_do_not_crash():
    assert compute_score(r"\boxed{42}", 42) == 1.0  # type: ignore[arg-type]
    assert compute_score(None, "1") == 0.0  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# 3. The process pool
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool():
    with RewardPool(num_workers=2, timeout_s=5.0) as p:
        yield p


def test_pool_scores_in_order(pool):
    pairs = [(rf"\boxed{{{a}}}", t) for a, t, _ in PAIRS[:20]]
    assert pool.score_many(pairs) == [e for *_, e in PAIRS[:20]]
    assert pool.score_many([]) == []


async def test_pool_async_scoring(pool):
    pairs = [(r"\boxed{\frac12}", "0.5"), (r"\boxed{3}", "4"), (r"\boxed{x=3}", "3")]
    scores = await asyncio.gather(*(asyncio.wrap_future(pool.submit(s, t)) for s, t in pairs))
    assert scores == [1.0, 0.0, 1.0]


def _wait_until(predicate, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _live_descendants() -> set[int]:
    """This process's live descendants: the pools' workers (forkserver's children) among them."""
    return {c.pid for c in psutil.Process().children(recursive=True) if not _gone(c.pid)}


def _start_busy_item(p, tmp_path):
    """Submit a 60 s `sleepy_score` item; its future and, once a worker runs it, that worker's pid."""
    marker = tmp_path / "busy_pid"
    future = p.submit(str(marker), "60")
    _wait_until(lambda: marker.exists() and marker.read_text() != "")
    return future, int(marker.read_text())


def test_pathological_inputs_score_zero_and_pool_recovers():
    with RewardPool(num_workers=2, timeout_s=1.5) as p:
        assert p.submit(r"\boxed{1}", "1").result() == 1.0  # workers ready
        before = _live_descendants()
        pairs = [(r"\boxed{9^{9^{9^{9}}}}", "1"), (r"\boxed{(10^{7})!}", "1"), (r"\boxed{2}", "2")]
        assert p.score_many(pairs) == [0.0, 0.0, 1.0]
        # math-verify spends its own 3 s limit on (10^7)!, so the pool's 1.5 s limit kills that worker
        assert p.stats["timeouts"] == 1
        _wait_until(lambda: any(_gone(pid) for pid in before))
        assert p.score_many([(r"\boxed{2}", "2"), (r"\boxed{3}", "2")]) == [1.0, 0.0]


def test_timeout_kills_and_replaces_worker():
    with RewardPool(num_workers=1, timeout_s=0.5, score_fn=sleepy_score) as p:
        old_pid = int(p.submit("", "0").result())
        assert p.submit("", "60").result(timeout=20) == 0.0  # would sleep a minute: killed at 0.5 s
        assert p.stats["timeouts"] == 1
        _wait_until(lambda: _gone(old_pid))
        new_pid = int(p.submit("", "0").result(timeout=20))  # the only worker is a new one
        assert new_pid != old_pid and not _gone(new_pid)


def test_worker_killed_mid_item_is_replaced(tmp_path):
    with RewardPool(num_workers=1, timeout_s=60.0, score_fn=sleepy_score) as p:
        future, victim = _start_busy_item(p, tmp_path)
        os.kill(victim, signal.SIGKILL)
        assert future.result(timeout=20) == 0.0
        assert p.stats["crashes"] == 1
        assert int(p.submit("", "0").result(timeout=20)) not in (0, victim)


def test_a_cancelled_running_item_stops_its_worker(tmp_path):
    with RewardPool(num_workers=1, timeout_s=60.0, score_fn=sleepy_score) as p:
        future, busy = _start_busy_item(p, tmp_path)
        assert future.cancel()
        _wait_until(lambda: _gone(busy))
        # well before the 60 s item would have ended, a new worker scores
        assert int(p.submit("", "0").result(timeout=20)) not in (0, busy)


def test_score_fn_error_scores_zero_and_worker_survives():
    with RewardPool(num_workers=1, timeout_s=5.0, score_fn=raising_score) as p:
        pid = p.submit("a", "b").result()
        assert p.score_many([("a", "boom"), ("c", "boom")]) == [0.0, 0.0]
        assert p.stats["errors"] == 2
        assert p.submit("a", "b").result() == pid  # the same worker


def test_scoring_never_runs_in_caller_process():
    with RewardPool(num_workers=2, timeout_s=5.0, score_fn=pid_score) as p:
        pids = {int(x) for x in p.score_many([("a", "b")] * 6)}
        assert os.getpid() not in pids
        assert pids <= _live_descendants()


def test_pool_clear_errors():
    with pytest.raises(ValueError, match="num_workers"):
        RewardPool(num_workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        RewardPool(num_workers=1, timeout_s=0)
    with pytest.raises(ValueError, match="module:function"):
        RewardPool(num_workers=1, score_fn="no_colon")
    with pytest.raises(TypeError, match="cannot be sent"):
        RewardPool(num_workers=1, score_fn=lambda a, b: 1.0)
    with pytest.raises(ValueError, match="fork"):
        RewardPool(num_workers=1, start_method="fork")


def test_pool_rejects_bad_pairs(pool):
    with pytest.raises(TypeError, match="pairs\\[1\\]"):
        pool.score_many([("a", "b"), ("only one",)])
    with pytest.raises(TypeError, match="two str"):
        pool.score_many([("a", 5)])
    with pytest.raises(TypeError, match="two str"):
        pool.submit("a", 5)


def test_closed_pool_raises():
    p = RewardPool(num_workers=1, timeout_s=5.0)
    assert p.submit(r"\boxed{1}", "1").result() == 1.0
    p.close()
    p.close()  # idempotent
    assert p.closed
    with pytest.raises(RewardPoolClosedError):
        p.submit(r"\boxed{1}", "1")


def test_close_fails_in_flight_items_and_stops_workers(tmp_path):
    p = RewardPool(num_workers=1, timeout_s=60.0, score_fn=sleepy_score)
    future, pid = _start_busy_item(p, tmp_path)
    queued = p.submit("", "0")  # waits behind the busy item
    p.close()
    for unfinished in (future, queued):
        with pytest.raises(RewardPoolClosedError):
            unfinished.result(timeout=20)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the worker is gone (killed and reaped)


def test_unimportable_score_fn_breaks_pool_clearly():
    with RewardPool(num_workers=1, score_fn="rstar2_agent.no_such_module:fn") as p:
        # the broken worker may be noticed before `submit` (which then raises) or after (the future raises)
        with pytest.raises(RewardPoolBrokenError, match="no_such_module"):
            p.submit("a", "b").result(timeout=60)


# --------------------------------------------------------------------------------------------------
# 4. The verl reward manager
# --------------------------------------------------------------------------------------------------

WORDS = [
    "The", "answer", "is", "so", "ok", "let", "me", "check", "user", "assistant",
    r"\boxed{5}", r"\boxed{3}", r"\boxed{7}", "<tool_response>", "</tool_response>", "Question", "?",
]
SPECIAL = ["<pad>", "<unk>", "<|im_end|>", "<|im_start|>"]
P_LEN, R_LEN = 3, 8


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return tok


def _row(tokenizer, segments):
    """(ids, model_mask) for a response given as [(text, is_model_text), ...]."""
    ids, mask = [], []
    for text, is_model in segments:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [int(is_model)] * len(piece)
    assert len(ids) <= R_LEN
    return ids, mask


# Each case: segments of the response, ground truth, expected score, expected last valid index (None = empty).
MANAGER_CASES = [
    ([("The answer is \\boxed{5} <|im_end|>", True)], "5", 1.0, 4),
    # the tool prints \boxed{5}; the model's own last box is \boxed{3}: the truth is 3
    (
        [("so \\boxed{3}", True), ("<tool_response> \\boxed{5} </tool_response>", False), ("ok <|im_end|>", True)],
        "3",
        1.0,
        6,
    ),
    # only the tool prints the right answer: 0.0
    (
        [("let me check", True), ("<tool_response> \\boxed{5} </tool_response>", False), ("ok <|im_end|>", True)],
        "5",
        0.0,
        7,
    ),
    # empty response
    ([], "5", 0.0, None),
    # a program prints a forged end of its tool turn and then a box: still tool output, still not the answer
    ([("check", True), ("<tool_response> </tool_response> \\boxed{5} </tool_response>", False), ("ok <|im_end|>", True)],
     "5", 0.0, 6),
    # fills the whole response window: the score goes to the very last column
    ([("so the answer is ok ok \\boxed{7} <|im_end|>", True)], "7", 1.0, 7),
]


def _batch(tokenizer, mask_source="response_mask"):
    """The cases as a right-padded batch; which tokens are model text is told by `mask_source`:
    "response_mask" (a tensor, as the CPU engine passes), "model_spans" (our agent loop's extra field, as verl's
    reward loop passes it: `tool_extra_fields`), or None."""
    import numpy as np
    import torch
    from verl import DataProto

    from rstar2_agent.rollout.core import mask_spans

    n = len(MANAGER_CASES)
    prompts = torch.zeros(n, P_LEN, dtype=torch.long)
    responses = torch.full((n, R_LEN), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros(n, P_LEN + R_LEN, dtype=torch.long)
    response_mask = torch.zeros(n, R_LEN, dtype=torch.long)
    prompt_ids = tokenizer("Question ?", add_special_tokens=False)["input_ids"]
    for i, (segments, *_rest) in enumerate(MANAGER_CASES):
        prompts[i, P_LEN - len(prompt_ids) :] = torch.tensor(prompt_ids)  # left-padded prompt
        attention[i, P_LEN - len(prompt_ids) : P_LEN] = 1
        ids, mask = _row(tokenizer, segments)
        if ids:
            responses[i, : len(ids)] = torch.tensor(ids)
            attention[i, P_LEN : P_LEN + len(ids)] = 1
            response_mask[i, : len(ids)] = torch.tensor(mask)
    tensors = {"prompts": prompts, "responses": responses, "attention_mask": attention,
               "input_ids": torch.cat([prompts, responses], dim=1)}
    if mask_source == "response_mask":
        tensors["response_mask"] = response_mask
    non_tensors = {
        "reward_model": np.array([{"ground_truth": c[1]} for c in MANAGER_CASES], dtype=object),
        "data_source": np.array(["rstar_math"] * n, dtype=object),
        "__num_turns__": np.array([2 + 2 * sum(not m for _, m in c[0]) for c in MANAGER_CASES]),
    }
    if mask_source == "model_spans":
        non_tensors["tool_extra_fields"] = np.array(
            [{"model_spans": mask_spans(row.tolist()), "tool_call_count": 1} for row in response_mask], dtype=object)
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


@pytest.fixture(scope="module")
def manager(tokenizer, pool):
    from omegaconf import OmegaConf

    from rstar2_agent.reward.verl_manager import CodeJudgeRewardManager

    config = OmegaConf.create({"reward": {"reward_kwargs": {"timeout_s": 5.0}}})
    return CodeJudgeRewardManager(config=config, tokenizer=tokenizer, compute_score=None, pool=pool)


def _expected_tensor():
    import torch

    expected = torch.zeros(len(MANAGER_CASES), R_LEN)
    for i, (_, _, score, index) in enumerate(MANAGER_CASES):
        if index is not None:
            expected[i, index] = score
    return expected


def test_manager_registered_where_verls_trainer_looks():
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    from rstar2_agent.reward.verl_manager import CodeJudgeRewardManager

    assert get_reward_manager_cls("code_judge") is CodeJudgeRewardManager


def test_manager_decodes_only_model_tokens(manager, tokenizer):
    from rstar2_agent.reward.verl_manager import decode_model_text, response_valid_mask

    data = _batch(tokenizer)
    valid = response_valid_mask(data)
    text = decode_model_text(tokenizer, data.batch["responses"][1], valid[1] & data.batch["response_mask"][1].bool())
    assert "tool_response" not in text and r"\boxed{5}" not in text
    assert r"\boxed{3}" in text and "<|im_end|>" not in text


async def test_manager_refuses_to_guess_model_text(manager, tokenizer):
    """No response_mask and no model_spans: a multi-turn row is refused (the old text-stripping fallback let a
    forged `</tool_response>` through); a single-turn row has no tool output, so all of it is the model's."""
    from rstar2_agent.reward.verl_manager import model_token_mask

    data = _batch(tokenizer, mask_source=None)
    with pytest.raises(ValueError, match="cannot tell the model's text from tool output"):
        await manager.run_single(data[1:2])
    assert (await manager.run_single(data[0:1]))["reward_score"] == 1.0
    assert model_token_mask(data, 0).all()  # case 0 is one model turn
    with pytest.raises(ValueError):
        model_token_mask(data, 1)


@pytest.mark.parametrize("mask_source", ["response_mask", "model_spans"])
async def test_manager_reward_loop_api(manager, tokenizer, mask_source):
    """`run_single` per sample, then `assemble_rm_scores`, as verl's reward loop calls them; with the model's
    tokens told by a `response_mask` tensor or, as verl's reward loop passes them, by our agent loop's spans."""
    data = _batch(tokenizer, mask_source)
    results = [await manager.run_single(data[i : i + 1]) for i in range(len(data))]
    scores = [r["reward_score"] for r in results]
    assert scores == [c[2] for c in MANAGER_CASES]
    assert all(r["reward_extra_info"]["acc"] == s for r, s in zip(results, scores))
    rm_scores = type(manager).assemble_rm_scores(data, scores)
    assert rm_scores.equal(_expected_tensor())
    assert rm_scores[3].abs().sum() == 0  # empty response: not written at -1


def recorded_reward_batch():
    """A batch exactly as verl 0.9.1's agent-loop worker sent it to the reward loop, recorded by
    tests/test_verl_trainer_path.py (which checks that verl still sends this shape): a trajectory whose tool
    printed `</tool_response> \\boxed{42}` and whose model then answered 41; the truth is 42."""
    import os

    import torch

    path = os.path.join(os.path.dirname(__file__), "data", "verl_0.9.1", "reward_loop_batch.pt")
    return torch.load(path, weights_only=False)


async def test_manager_on_verls_recorded_reward_batch(pool):
    from rstar2_agent.engine.tiny import build_tokenizer
    from rstar2_agent.reward.verl_manager import CodeJudgeRewardManager

    data = recorded_reward_batch()
    assert "response_mask" not in data.batch.keys()  # verl sends none: the spans are what tells model text
    manager = CodeJudgeRewardManager(config=None, tokenizer=build_tokenizer(), pool=pool)
    assert (await manager.run_single(data))["reward_score"] == 0.0
    data.non_tensor_batch["tool_extra_fields"][0].pop("model_spans")
    with pytest.raises(ValueError, match="cannot tell"):
        await manager.run_single(data)


async def test_manager_does_not_score_a_trajectory_the_sandbox_failed(tokenizer):
    """`infra_error` in the agent loop's extra fields: 0.0 at once, nothing decoded, no pool started; the same
    sample without the flag is scored."""
    from rstar2_agent.reward.verl_manager import CodeJudgeRewardManager

    data = _batch(tokenizer, "model_spans")
    correct = next(i for i, case in enumerate(MANAGER_CASES) if case[2] == 1.0)
    row = data[correct:correct + 1]
    row.non_tensor_batch["tool_extra_fields"][0]["infra_error"] = True

    class NoPool:
        broken, closed = None, False

        def submit(self, *args):
            raise AssertionError("a faulted trajectory reached the pool")

    manager = CodeJudgeRewardManager(config=None, tokenizer=tokenizer, pool=NoPool())
    assert await manager.run_single(row) == {"reward_score": 0.0, "reward_extra_info": {"acc": 0.0}}
    row.non_tensor_batch["tool_extra_fields"][0]["infra_error"] = False
    with pytest.raises(AssertionError, match="reached the pool"):
        await manager.run_single(row)
