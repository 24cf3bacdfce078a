"""The trainer config composes exactly as the example script launches it, on verl 0.9.1's own ppo_trainer."""

import os
import subprocess
import sys

from hydra import compose, initialize_config_dir

import rstar2_agent.main  # noqa: F401 - registers plugins and resolvers, as `python -m rstar2_agent.main` does
from rstar2_agent.rollout.template import load_chat_template
from rstar2_agent.verl_plugins import CONFIG_DIR


def compose_trainer(overrides=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("rstar2_agent_trainer", overrides=list(overrides))


def test_defaults_layer_the_recipe_on_verl():
    cfg = compose_trainer()
    mt = cfg.actor_rollout_ref.rollout.multi_turn
    assert (mt.enable, mt.max_assistant_turns, mt.format, mt.max_tool_response_length) == (
        True, 5, "rstar2_agent_hermes", 1000)
    assert mt.tool_config_path == os.path.join(CONFIG_DIR, "tool_config", "python_tool_config.yaml")
    assert os.path.exists(cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path)
    assert cfg.actor_rollout_ref.model.custom_chat_template == load_chat_template()
    assert cfg.reward.reward_manager.name == "code_judge" and cfg.data.return_raw_chat is True
    assert "ppo_mini_batch_size" in cfg.actor_rollout_ref.actor and cfg.trainer.use_v1 is True  # verl's own tree
    assert cfg.trainer.v1.trainer_mode == "rstar2_agent"
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.critic.enable in (None, False)  # GRPO: no critic
    assert cfg.augmentation.do_down_sampling is False and cfg.augmentation.down_sampling_config.down_sample_to_n == -1


def test_example_script_overrides_resolve():
    overrides = [
        "algorithm.adv_estimator=grpo", "data.train_batch_size=128", "data.max_response_length=8192",
        "actor_rollout_ref.rollout.n=32", "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "augmentation.do_down_sampling=True", "augmentation.down_sampling_config.down_sample_to_n=16",
        "augmentation.down_sampling_config.reject_equal_reward=True",
        "augmentation.down_sampling_config.roc_error_ratio=True",
        "augmentation.down_sampling_config.roc_answer_format=True",
        "augmentation.down_sampling_config.min_zero_reward_trace_num=2",
        "augmentation.down_sampling_config.min_non_zero_reward_trace_num=2",
    ]
    cfg = compose_trainer(overrides)
    from rstar2_agent.down_sample.batch import DownSamplingConfig

    ds = DownSamplingConfig.from_config(cfg)
    assert (ds.do_down_sampling, ds.down_sample_to_n, ds.min_zero_reward_trace_num) == (True, 16, 2)
    assert cfg.actor_rollout_ref.rollout.n == 32 and cfg.actor_rollout_ref.rollout.response_length == 8192


def test_entry_point_sets_the_plugin_variable_for_verl_processes():
    out = subprocess.run([sys.executable, "-c", "import rstar2_agent.main, os; print(os.environ['VERL_USE_EXTERNAL_MODULES'])"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().split(",")[-1] == "rstar2_agent.verl_plugins", out.stderr[-2000:]
    # a fresh process that only imports verl, as Ray workers do, gets our registrations
    probe = ("import verl; from verl.experimental.agent_loop.agent_loop import _agent_loop_registry; "
             "from verl.experimental.agent_loop.tool_parser import ToolParser; "
             "from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY; "
             "print('rstar2_agent' in _agent_loop_registry, 'rstar2_agent_hermes' in ToolParser._registry, "
             "'rstar2_agent' in TRAINER_REGISTRY)")
    env = dict(os.environ, VERL_USE_EXTERNAL_MODULES="rstar2_agent.verl_plugins")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "True True True", out.stderr[-2000:]


def test_down_sampling_without_the_trainer_hook_is_refused_not_ignored():
    out = subprocess.run([sys.executable, "-m", "rstar2_agent.main", "augmentation.do_down_sampling=True",
                          "trainer.v1.trainer_mode=sync"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "needs verl's V1 trainer with our hook" in out.stderr


def test_reward_kwargs_are_declared_and_reach_the_manager(monkeypatch):
    """`reward.reward_kwargs` is in the trainer yaml, so it is overridden without `+`; the manager built from the
    composed config sizes its pool to the node's share per reward-loop worker unless told otherwise."""
    from rstar2_agent.engine.tiny import build_tokenizer
    from rstar2_agent.reward import verl_manager

    monkeypatch.setattr(verl_manager, "usable_cores", lambda: 96)
    cfg = compose_trainer()
    assert dict(cfg.reward.reward_kwargs) == {"pool_workers": None, "timeout_s": 5.0, "score_fn": None}
    m = verl_manager.CodeJudgeRewardManager(config=cfg, tokenizer=build_tokenizer())
    assert m.num_workers == 96 // cfg.reward.num_workers  # 8 reward-loop workers by default: 12 processes each
    assert (m.timeout_s, m.score_fn) == (5.0, verl_manager.DEFAULT_SCORE_FN)
    cfg = compose_trainer(["reward.reward_kwargs.pool_workers=3", "reward.reward_kwargs.timeout_s=2"])
    m = verl_manager.CodeJudgeRewardManager(config=cfg, tokenizer=build_tokenizer())
    assert (m.num_workers, m.timeout_s) == (3, 2.0)


def test_every_ray_worker_gets_the_plugin_variable(monkeypatch):
    """verl's main_ppo merges `ray_kwargs.ray_init.runtime_env` over `get_ppo_ray_runtime_env(config)` and hands
    the result to ray.init: the variable must survive that merge, so that workers on other nodes (which do not
    inherit the driver's environment) load our plugins."""
    from omegaconf import OmegaConf
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)  # not inherited from this process
    cfg = compose_trainer()
    runtime_env = OmegaConf.merge(get_ppo_ray_runtime_env(cfg), cfg.ray_kwargs.ray_init.runtime_env)
    env_vars = OmegaConf.to_container(runtime_env)["env_vars"]
    assert env_vars["VERL_USE_EXTERNAL_MODULES"] == "rstar2_agent.verl_plugins"
    assert env_vars["TOKENIZERS_PARALLELISM"] == "true"  # verl's own defaults are kept beside it


def saved_tokenizer(folder, eos_token=None):
    """The tiny tokenizer (ChatML, eos <|im_end|>) saved as a model folder, with `eos_token` swapped in if given."""
    import copy

    from rstar2_agent.engine.tiny import build_tokenizer

    tokenizer = copy.deepcopy(build_tokenizer())
    if eos_token:
        tokenizer.eos_token = eos_token
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_tokenizer_whose_eos_does_not_end_the_assistant_turn_is_refused(tmp_path):
    import pytest

    from rstar2_agent.main import check_supported

    good = saved_tokenizer(tmp_path / "instruct")
    check_supported(compose_trainer([f"actor_rollout_ref.model.path={good}"]))
    base = saved_tokenizer(tmp_path / "base", eos_token="<|endoftext|>")  # what base Qwen checkpoints ship
    with pytest.raises(SystemExit, match=r"eos_token='<\|endoftext\|>'"):
        check_supported(compose_trainer([f"actor_rollout_ref.model.path={base}"]))
    with pytest.raises(SystemExit, match="cannot load the tokenizer"):
        check_supported(compose_trainer([f"actor_rollout_ref.model.path={tmp_path / 'missing'}"]))


LAUNCH = """
import json, sys
import verl.trainer.main_ppo as verl_main

def body(config):  # verl's main_ppo body, which would start Ray: report what it was given instead
    runtime_env = config.ray_kwargs.ray_init.runtime_env
    print("CONFIG", json.dumps([config.trainer.resume_mode, runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES]))

verl_main.main = type("Main", (), {"__wrapped__": staticmethod(body)})
from rstar2_agent import cli
cli.main(sys.argv[1:])
"""


def launch(tmp_path, *args):
    """`rstar2-agent train --config-name rstar2_agent_trainer ARGS` down to verl's entry point (Hydra, the entry
    point's own checks and all), in a fresh process as a user runs it."""
    return subprocess.run([sys.executable, "-c", LAUNCH, "train", "--config-name", "rstar2_agent_trainer", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_gpu_train_resumes_only_with_resume(tmp_path):
    import json

    model = saved_tokenizer(tmp_path / "instruct")
    for flag, mode in (([], "disable"), (["--resume"], "auto")):
        out = launch(tmp_path, "--model", model, *flag)
        line = [l for l in out.stdout.splitlines() if l.startswith("CONFIG ")]
        assert line, out.stdout[-2000:] + out.stderr[-3000:]
        assert json.loads(line[0][7:]) == [mode, "rstar2_agent.verl_plugins"]
    out = launch(tmp_path, "--model", saved_tokenizer(tmp_path / "base", eos_token="<|endoftext|>"))
    assert out.returncode != 0 and "eos_token='<|endoftext|>'" in out.stderr and "CONFIG" not in out.stdout
