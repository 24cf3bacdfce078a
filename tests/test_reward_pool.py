"""The reward pool's size and failure modes under verl: one pool per reward-loop worker, sized to its share of the
node, and a pool whose workers cannot start is reported, never silently rebuilt (each rebuild would spawn a full
pool of processes that fail the same way)."""

import pytest
from omegaconf import OmegaConf

from rstar2_agent.engine.tiny import build_tokenizer
from rstar2_agent.reward import verl_manager
from rstar2_agent.reward.pool import RewardPool, RewardPoolBrokenError, RewardPoolClosedError
from rstar2_agent.reward.verl_manager import CodeJudgeRewardManager

TOK = build_tokenizer()
UNIMPORTABLE = "rstar2_agent.no_such_module:fn"


def manager(reward: dict) -> CodeJudgeRewardManager:
    return CodeJudgeRewardManager(config=OmegaConf.create({"reward": reward}), tokenizer=TOK, compute_score=None)


def test_default_pool_is_the_nodes_share_per_reward_loop_worker(monkeypatch):
    monkeypatch.setattr(verl_manager, "usable_cores", lambda: 64)
    assert manager({"num_workers": 8, "reward_kwargs": {"pool_workers": None}}).num_workers == 8  # 64 // 8
    assert manager({"num_workers": 3}).num_workers == 21
    assert manager({"num_workers": 128}).num_workers == 1  # never 0
    assert manager({"num_workers": 8, "reward_kwargs": {"pool_workers": 5}}).num_workers == 5  # the user's choice
    assert manager({"num_workers": 8, "reward_kwargs": {"num_workers": 6}}).num_workers == 6  # the old key name
    assert CodeJudgeRewardManager(tokenizer=TOK).num_workers == 64  # no verl config: one manager, every core


def test_a_broken_pool_is_broken_not_closed():
    with RewardPool(num_workers=1, score_fn=UNIMPORTABLE) as p:
        with pytest.raises(RewardPoolBrokenError, match="no_such_module"):
            p.submit("a", "b").result(timeout=60)
        assert "no_such_module" in p.broken and not p.closed
    assert p.closed and p.broken  # closing it later does not hide why it broke


def test_a_closed_pool_is_not_broken():
    p = RewardPool(num_workers=1)
    p.close()
    assert p.closed and p.broken is None
    with pytest.raises(RewardPoolClosedError):
        p.submit("a", "b")


def test_the_manager_raises_on_a_broken_pool_instead_of_starting_another():
    m = manager({"num_workers": 8, "reward_kwargs": {"pool_workers": 1, "score_fn": UNIMPORTABLE}})
    try:
        pool = m.pool
        with pytest.raises(RewardPoolBrokenError):
            pool.submit("a", "b").result(timeout=60)
        for _ in range(2):
            with pytest.raises(RewardPoolBrokenError, match="no_such_module"):
                m.pool
        assert m._pool is pool  # nothing new was started
    finally:
        m.close()


def test_the_manager_starts_a_new_pool_after_its_own_close():
    m = manager({"num_workers": 8, "reward_kwargs": {"pool_workers": 1}})
    first = m.pool
    m.close()
    try:
        assert m.pool is not first and not m.pool.closed
        assert m.pool.submit(r"\boxed{2}", "2").result() == 1.0
    finally:
        m.close()


def test_a_worker_that_cannot_load_the_scoring_code_in_time_breaks_the_pool(tmp_path, monkeypatch):
    (tmp_path / "slow_scoring_module.py").write_text("import time\ntime.sleep(30)\n\ndef score(a, b):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's sys.path
    with RewardPool(num_workers=1, score_fn="slow_scoring_module:score", start_method="spawn",
                    start_timeout_s=1.0) as p:
        with pytest.raises(RewardPoolBrokenError, match="did not start"):
            p.submit("a", "b").result(timeout=60)
        with pytest.raises(RewardPoolBrokenError):
            p.submit("a", "b")  # refused at once from now on
