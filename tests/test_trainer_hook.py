"""The glue between a scored rollout (as verl's V1 trainer stores it) and GRPO-RoC's choice of rows."""

import pytest

from rstar2_agent.down_sample.batch import DownSamplingConfig
from rstar2_agent.trainer.hook import build_batch, rows_to_keep
from rstar2_agent.engine.tiny import build_tokenizer

TOK = build_tokenizer()
PROMPT = TOK.encode("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<reason>", add_special_tokens=False)
OK_TOOL = ("Let me check.\n<tool_call>\n{}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nTool call "
           "success\nstdout: 1\n</tool_response><|im_end|>\n<|im_start|>assistant\n<reason>so </reason> "
           "<answer>\\boxed{1}</answer><|im_end|>")
BAD_TOOL = OK_TOOL.replace("Tool call success\nstdout: 1", "Tool call failure\nstderr: NameError: x")


def scored(text: str, reward: float) -> tuple[list[int], list[float]]:
    ids = TOK.encode(text, add_special_tokens=False)
    return ids, [0.0] * (len(ids) - 1) + [reward]


def test_build_batch_pads_and_keeps_positions():
    batch = build_batch(["a", "b"], [[1, 2, 3], [4]], [[5], [6, 7]], [[1.0], [0.0, 2.0]], pad_token_id=0)
    assert batch.batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 0, 0, 1, 1]]
    assert batch.batch["token_level_scores"].sum(-1).tolist() == [1.0, 2.0]
    assert list(batch.non_tensor_batch["row"]) == [0, 1]


def test_rows_to_keep_applies_reject_equal_and_roc_in_input_order():
    # group p: 2 correct (one with a failing tool call), 2 wrong; group q: all wrong (equal -> dropped)
    traces = [("p", OK_TOOL, 0.0), ("q", OK_TOOL, 0.0), ("p", BAD_TOOL, 1.0), ("p", OK_TOOL, 1.0),
              ("q", BAD_TOOL, 0.0), ("p", BAD_TOOL, 0.0)]
    responses, scores = zip(*(scored(text, r) for _, text, r in traces))
    cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
                             roc_error_ratio=True, roc_answer_format=True, min_zero_reward_trace_num=1,
                             min_non_zero_reward_trace_num=1)
    rows, metrics = rows_to_keep([u for u, _, _ in traces], [PROMPT] * 6, responses, scores, TOK, cfg)
    # p keeps its first negative (row 0) and its cleanest positive (row 3: tool call worked)
    assert rows == [0, 3]
    assert metrics["down_sampling/before_sampling_trace_num"] == 6
    assert metrics["down_sampling/after_sampling_trace_num"] == 2


def test_nothing_left_is_none():
    responses, scores = zip(*(scored(OK_TOOL, 1.0) for _ in range(2)))
    cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True)
    rows, _ = rows_to_keep(["p", "p"], [PROMPT] * 2, responses, scores, TOK, cfg)
    assert rows is None


def fake_transfer_queue(monkeypatch) -> dict:
    """Six scored traces under keys k0..k5 (group p: mixed rewards, group q: all wrong), served by a fake
    `kv_batch_get` with TransferQueue's signature."""
    import rstar2_agent.trainer.roc_trainer as roc

    traces = [("p", OK_TOOL, 0.0), ("q", OK_TOOL, 0.0), ("p", BAD_TOOL, 1.0), ("p", OK_TOOL, 1.0),
              ("q", BAD_TOOL, 0.0), ("p", BAD_TOOL, 0.0)]
    store = {f"k{i}": {"uid": u, "prompts": PROMPT, **dict(zip(("responses", "rm_scores"), scored(t, r)))}
             for i, (u, t, r) in enumerate(traces)}
    monkeypatch.setattr(roc.tq, "kv_batch_get", lambda keys, partition_id, select_fields: {
        f: [store[k][f] for k in keys] for f in select_fields})
    return store


def test_verl_trainer_hook_keeps_the_chosen_keys_then_balances(monkeypatch):
    """The registered V1 trainer's `_balance_batch`, with TransferQueue and verl's own balancing faked."""
    from transfer_queue.metadata import KVBatchMeta
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    import rstar2_agent.trainer.roc_trainer as roc

    store = fake_transfer_queue(monkeypatch)
    balanced = []
    monkeypatch.setattr(PPOTrainerSync, "_balance_batch",
                        lambda self, batch, metrics, **kw: balanced.append(list(batch.keys)) or batch)

    assert get_trainer_cls("rstar2_agent") is roc.RStar2AgentTrainer
    trainer = object.__new__(roc.RStar2AgentTrainer)  # verl's __init__ needs GPUs and Ray; the hook does not
    trainer.tokenizer = TOK
    trainer.down_sampling = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
                                               roc_error_ratio=True, roc_answer_format=True,
                                               min_zero_reward_trace_num=1, min_non_zero_reward_trace_num=1)
    batch = KVBatchMeta(keys=list(store), tags=[{"seq_len": 10}] * 6, partition_id="train")
    metrics = {}
    out = trainer._balance_batch(batch, metrics)
    assert balanced == [["k0", "k3"]] and list(out.keys) == ["k0", "k3"]
    assert metrics["down_sampling/nothing_left"] == 0.0 and metrics["down_sampling/after_sampling_trace_num"] == 2


def test_grpo_advantage_is_computed_on_the_kept_subset():
    """verl's own GRPO advantage, on the rows RoC keeps: each group normalised over its kept traces only."""
    import numpy as np
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    traces = [("p", BAD_TOOL, 0.0), ("p", OK_TOOL, 1.0), ("p", BAD_TOOL, 1.0), ("p", BAD_TOOL, 1.0)]
    responses, scores = zip(*(scored(text, r) for _, text, r in traces))
    cfg = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
                             roc_error_ratio=True, min_zero_reward_trace_num=1, min_non_zero_reward_trace_num=1)
    rows, _ = rows_to_keep(["p"] * 4, [PROMPT] * 4, responses, scores, TOK, cfg)
    assert rows == [0, 1]  # the negative, and the positive whose tool call worked

    def advantages(keep):
        batch = build_batch(["p"] * len(keep), [PROMPT] * len(keep), [responses[i] for i in keep],
                            [scores[i] for i in keep], TOK.pad_token_id)
        mask = batch.batch["attention_mask"][:, batch.batch["prompts"].shape[1]:]
        adv, _ = compute_grpo_outcome_advantage(batch.batch["token_level_scores"], mask,
                                                np.array(["p"] * len(keep), dtype=object))
        return [round(adv[i][mask[i].bool()][0].item(), 3) for i in range(len(keep))]

    # kept: rewards [0, 1] -> mean 0.5, std 0.707 -> -/+0.707; the whole group [0, 1, 1, 1] would give -1.5/+0.5
    assert advantages(rows) == [-0.707, 0.707]
    assert advantages([0, 1, 2, 3]) == [-1.5, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("async_reward", [True, False])
def test_one_trainer_step_sees_only_the_kept_traces(monkeypatch, async_reward):
    """verl's real `_step_once` and `_balance_batch` with the worker groups and TransferQueue replaced by
    in-process fakes: every stage after the reward (old log-probs, advantage, update) gets the kept traces,
    padded by verl to its batch multiple, never the dropped ones."""
    from omegaconf import OmegaConf
    from transfer_queue.metadata import KVBatchMeta

    import rstar2_agent.trainer.roc_trainer as roc
    import verl.trainer.ppo.v1.trainer_base as base

    store = fake_transfer_queue(monkeypatch)

    def pad_to_multiple(batch, multiple, eos_token_id):  # stands in for verl's TransferQueue padding
        missing = -len(batch) % multiple
        return KVBatchMeta(keys=list(batch.keys) + [f"pad{i}" for i in range(missing)],
                           tags=list(batch.tags) + [{"seq_len": 1, "is_padding": True}] * missing,
                           partition_id=batch.partition_id)

    monkeypatch.setattr(base, "upsample_batch_to_divisible_size", pad_to_multiple)

    class ReplayBuffer:
        def sample(self, global_steps, partition_id, batch_size):
            return KVBatchMeta(keys=list(store), tags=[{"seq_len": 40 + i} for i in range(6)],
                               partition_id="train"), {}

    class WorkerGroup:
        _dispatch_info = {"actor": [0, 1, 2, 3]}  # 4 data-parallel ranks

    seen = []

    def stage(name):
        def run(self, batch, metrics):
            seen.append((name, sorted(batch.keys)))
            return batch
        return run

    for name in ("_compute_reward_colocate", "_compute_old_log_prob", "_compute_advantage", "_update_actor"):
        monkeypatch.setattr(roc.RStar2AgentTrainer, name, stage(name))

    trainer = object.__new__(roc.RStar2AgentTrainer)
    trainer.config = OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"temperature": 1.0, "n": 1}, "actor": {"ppo_mini_batch_size": 1}},
        "trainer": {"critic_warmup": 0}})
    trainer.tokenizer = TOK
    trainer.replay_buffer = ReplayBuffer()
    # async reward: scores were computed during rollout; off: verl computes them colocated, before our hook
    handles = ["reward workers"] if async_reward else None
    trainer.reward_loop_manager = type("R", (), {"reward_loop_worker_handles": handles})()
    trainer.actor_rollout_wg = WorkerGroup()
    trainer.use_reference_policy = trainer.use_critic = False
    trainer.global_steps = 1
    trainer.curr_step_profile = False
    trainer.checkpoint_manager = type("C", (), {"sleep_replicas": lambda self: None})()
    trainer.down_sampling = DownSamplingConfig(do_down_sampling=True, down_sample_to_n=2, reject_equal_reward=True,
                                               roc_error_ratio=True, roc_answer_format=True,
                                               min_zero_reward_trace_num=1, min_non_zero_reward_trace_num=1)
    metrics = {}
    trainer._step_once(metrics, {}, sample_batch_size=6)
    reward = [] if async_reward else [("_compute_reward_colocate", sorted(store))]  # sees all, before the hook
    assert seen[: len(reward)] == reward
    assert [name for name, _ in seen[len(reward):]] == ["_compute_old_log_prob", "_compute_advantage", "_update_actor"]
    assert all(keys == ["k0", "k3", "pad0", "pad1"] for _, keys in seen[len(reward):])  # 2 kept, padded for 4 ranks
    assert metrics["down_sampling/before_sampling_trace_num"] == 6 and "global_seqlen/min" in metrics
