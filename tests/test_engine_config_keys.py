"""The CPU engine's config keys: the README names every key that verl's trainer config does not have, and the
reward pool's size is `reward.pool_workers` (verl's `reward.num_workers` means reward-loop workers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rstar2_agent.engine.config import compose, config_dir

ROOT = Path(__file__).resolve().parent.parent


def _leaves(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out |= _leaves(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def _gpu_keys() -> set[str]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return _leaves(OmegaConf.to_container(hydra_compose("rstar2_agent_trainer"), resolve=False))


def test_the_readme_lists_every_cpu_only_key():
    cpu = _leaves(OmegaConf.to_container(compose("cpu_trainer")))
    ours = sorted(cpu - _gpu_keys())
    assert "reward.pool_workers" in ours and "data.val_size" in ours and "trainer.threads" in ours
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("These are ours, CPU"):].split("\n\n", 1)[0]
    missing = [k for k in ours if f"`{k}`" not in paragraph and f"`{k.split('.')[0]}.*`" not in paragraph]
    assert missing == []
    assert "`trainer.logger=jsonl`" in paragraph


def test_the_pool_size_is_reward_pool_workers():
    assert compose("cpu_trainer").reward.pool_workers == 1
    assert compose("cpu_trainer", ["reward.pool_workers=3"]).reward.pool_workers == 3
    with pytest.raises(Exception, match="num_workers"):  # the old name is refused, not silently ignored
        compose("cpu_trainer", ["reward.num_workers=3"])
    trainer = (ROOT / "rstar2_agent" / "engine" / "trainer.py").read_text()
    assert "cfg.reward.pool_workers" in trainer and "cfg.reward.num_workers" not in trainer
