"""The launch scripts in examples/: bash syntax, and every Hydra override they pass exists in verl's config.

Each script is run for real with a stand-in `python3` first on PATH that records its arguments, so the check
sees the overrides exactly as bash expands them (variables, quoting, arrays). Keys are then looked up in
verl 0.9.1's composed `ppo_trainer` config; `augmentation.*` (our block in rstar2_agent_recipe.yaml) and
`+key` additions are allowed without lookup. The rest are then composed for real and passed through verl's
own `validate_config`, which catches bad values and inconsistent batch sizes too.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TRAIN = EXAMPLES / "run_qwen3-14b_rstar2_agent_weave.sh"
EVALS = [EXAMPLES / "aime_eval.sh", EXAMPLES / "math500_eval.sh"]
SCRIPTS = [TRAIN, *EVALS]
OWN_PREFIXES = ("augmentation.",)
TRAIN_MODEL = "/models/qwen3-14b-sft"  # the training script has no default checkpoint (see its note 1)

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")


@pytest.fixture(scope="module")
def verl_config():
    """Our trainer config (verl's ppo_trainer + rstar2_agent_trainer.yaml), composed as the scripts launch it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rstar2_agent.verl_plugins import CONFIG_DIR  # also registers the config resolvers

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        yield lambda overrides=(): compose("rstar2_agent_trainer", overrides=list(overrides))
    GlobalHydra.instance().clear()


def run_script(script: Path, tmp_path: Path, *extra: str, **env_overrides: str) -> list[str]:
    """Run `script` with a fake python3 that records its argv; returns the arguments after `python3`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text('#!/bin/sh\nprintf \'%s\\0\' "$@" > "$ARGV_OUT"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    argv_out = tmp_path / f"{script.stem}.argv"
    env = {
        **os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "ARGV_OUT": str(argv_out),
        "SKIP_JUDGE_CHECK": "1", "HOME": str(tmp_path / "home"), "LOG_DIR": str(tmp_path),
        "OUTPUT_DIR": str(tmp_path / "out"), **({"MODEL_PATH": TRAIN_MODEL} if script == TRAIN else {}),
        **env_overrides,
    }
    proc = subprocess.run([BASH, str(script), *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return argv_out.read_text().split("\0")[:-1]


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher arguments up to the config name, Hydra overrides)."""
    i = argv.index("--config-name=rstar2_agent_trainer")
    return argv[: i + 1], argv[i + 1:]


def key_of(override: str) -> str:
    assert "=" in override, f"not a key=value override: {override!r}"
    return override.split("=", 1)[0]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_header(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    if "eval_common.sh" in text:  # the evaluation scripts share their body ...
        text += (EXAMPLES / "eval_common.sh").read_text()
    if "preflight.sh" in text:  # ... and every script its start-up checks
        text += (EXAMPLES / "preflight.sh").read_text()
    assert "ulimit -n 65535" in text
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launches_our_entry_point(script, tmp_path):
    argv = run_script(script, tmp_path)
    launcher, _ = split_overrides(argv)
    assert launcher == ["-m", "rstar2_agent.main", f"--config-path={REPO}/rstar2_agent/config",
                        "--config-name=rstar2_agent_trainer"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_override_key_exists_in_verl_config(script, tmp_path, verl_config):
    from omegaconf import OmegaConf

    _, overrides = split_overrides(run_script(script, tmp_path))
    keys = [key_of(o) for o in overrides]
    assert len(keys) == len(set(keys)), f"duplicate keys: {sorted(k for k in keys if keys.count(k) > 1)}"
    cfg = verl_config()
    sentinel = object()
    unknown = [k for k in keys if not k.startswith("+") and not k.startswith(OWN_PREFIXES)
               and OmegaConf.select(cfg, k, default=sentinel) is sentinel]
    assert not unknown, f"{script.name}: keys not in verl's ppo_trainer config: {unknown}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_overrides_compose_and_validate(script, tmp_path, verl_config):
    """The values parse as Hydra overrides, and verl's own config checks accept the result."""
    from verl.utils.config import validate_config

    _, overrides = split_overrides(run_script(script, tmp_path))
    cfg = verl_config(overrides)  # every override, ours included, exactly as the script passes them
    validate_config(cfg, use_reference_policy=False, use_critic=False)
    assert cfg.actor_rollout_ref.rollout.name == "sglang"
    assert cfg.reward.reward_manager.name == "code_judge"


def test_training_script_has_the_upstream_hyper_parameters(tmp_path, verl_config):
    _, overrides = split_overrides(run_script(TRAIN, tmp_path))
    got = dict(o.split("=", 1) for o in overrides)
    home = tmp_path / "home"
    expected = {
        "algorithm.adv_estimator": "grpo", "algorithm.use_kl_in_reward": "False",
        "data.train_batch_size": "128", "data.max_prompt_length": "2048", "data.max_response_length": "8192",
        "data.filter_overlong_prompts": "True", "data.truncation": "error", "data.return_raw_chat": "True",
        "data.train_files": f"{home}/data/rstar2-agent/dapo-math-17k-en/train.parquet",
        "data.val_files": f"{home}/data/rstar2-agent/aime2024/test.parquet",
        "actor_rollout_ref.model.path": TRAIN_MODEL,
        "actor_rollout_ref.actor.optim.lr": "1e-6", "actor_rollout_ref.actor.optim.lr_warmup_steps": "20",
        "actor_rollout_ref.actor.ppo_mini_batch_size": "64",  # upstream 128; see the script "actor_rollout_ref.actor.use_dynamic_bsz": "True",
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": "20480",
        "actor_rollout_ref.actor.use_kl_loss": "False", "actor_rollout_ref.actor.kl_loss_coef": "0",
        "actor_rollout_ref.actor.entropy_coeff": "0", "actor_rollout_ref.actor.clip_ratio_low": "0.2",
        "actor_rollout_ref.actor.clip_ratio_high": "0.28",
        "actor_rollout_ref.rollout.tensor_model_parallel_size": "4", "actor_rollout_ref.rollout.name": "sglang",
        "actor_rollout_ref.rollout.mode": "async", "actor_rollout_ref.rollout.gpu_memory_utilization": "0.8",
        "actor_rollout_ref.rollout.n": "32", "actor_rollout_ref.rollout.trace.backend": "weave",
        "actor_rollout_ref.rollout.trace.token2text": "True", "actor_rollout_ref.rollout.agent.num_workers": "1",
        "actor_rollout_ref.rollout.multi_turn.tool_config_path":
            f"{REPO}/rstar2_agent/config/tool_config/python_tool_config.yaml",
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz": "True",
        "actor_rollout_ref.ref.fsdp_config.param_offload": "True",
        "augmentation.do_down_sampling": "True",
        "augmentation.down_sampling_config.reject_equal_reward": "True",
        "augmentation.down_sampling_config.roc_error_ratio": "True",
        "augmentation.down_sampling_config.roc_answer_format": "True",
        "augmentation.down_sampling_config.min_zero_reward_trace_num": "2",
        "augmentation.down_sampling_config.min_non_zero_reward_trace_num": "2",
        "augmentation.down_sampling_config.down_sample_to_n": "16",
        "reward.reward_manager.name": "code_judge",
        "trainer.critic_warmup": "0", "trainer.logger": '["console","wandb"]',
        "trainer.project_name": "rstar2-agent", "trainer.experiment_name": "qwen3-14b-sgl-tool-agent-verify-n32",
        "trainer.n_gpus_per_node": "8", "trainer.nnodes": "1", "trainer.save_freq": "-1",
        "trainer.test_freq": "5", "trainer.total_training_steps": "200", "trainer.total_epochs": "15",
    }
    assert {k: got.get(k) for k in expected} == expected
    # what the composed config makes of them
    cfg = verl_config([o for o in overrides if not o.startswith(OWN_PREFIXES)])
    assert list(cfg.trainer.logger) == ["console", "wandb"]
    assert cfg.actor_rollout_ref.actor.clip_ratio_high == 0.28
    assert cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0  # training-time validation stays greedy


def test_training_script_passes_extra_overrides_and_env(tmp_path):
    argv = run_script(TRAIN, tmp_path, "trainer.total_training_steps=3", MODEL_PATH="/models/m", NNODES="2",
                      DATA_DIR="/d", CODE_JUDGE_URL="http://10.0.0.1:8088")  # several nodes need the judge's URL
    _, overrides = split_overrides(argv)
    assert overrides[-1] == "trainer.total_training_steps=3"
    assert "actor_rollout_ref.model.path=/models/m" in overrides
    assert "trainer.nnodes=2" in overrides
    assert "data.train_files=/d/dapo-math-17k-en/train.parquet" in overrides
    log = tmp_path / "rstar2-agent-qwen3-14b-sgl-tool-agent-verify-n32.log"
    assert log.exists()


@pytest.mark.parametrize("script,n,files", [
    (EVALS[0], 16, ["aime2024/test.parquet", "aime2025/test.parquet"]),
    (EVALS[1], 4, ["math500/test.parquet"]),
], ids=["aime", "math500"])
def test_eval_scripts_sample_for_avg_at_k(script, n, files, tmp_path, verl_config):
    _, overrides = split_overrides(run_script(script, tmp_path, DATA_DIR="/d"))
    cfg = verl_config([o for o in overrides if not o.startswith(OWN_PREFIXES)])
    assert cfg.trainer.val_only is True
    val = cfg.actor_rollout_ref.rollout.val_kwargs
    assert val.do_sample is True and val.temperature == 0.6 and val.top_p == 0.95 and val.n == n
    assert cfg.data.max_response_length == 30720
    assert list(cfg.data.val_files) == [f"/d/{f}" for f in files]
    assert list(cfg.data.train_files) == list(cfg.data.val_files)
    assert "pitfall 6" in script.read_text()


def test_training_script_names_no_default_checkpoint(tmp_path):
    """Base Qwen checkpoints fail the EOS check (their tokenizers end text with <|endoftext|>, the template's
    turns with <|im_end|>), so the script must be told which checkpoint to train rather than pick one."""
    env = {**os.environ, "HOME": str(tmp_path), "LOG_DIR": str(tmp_path), "SKIP_JUDGE_CHECK": "1"}
    env.pop("MODEL_PATH", None)
    proc = subprocess.run([BASH, str(TRAIN)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "MODEL_PATH" in proc.stderr and "<|im_end|>" in proc.stderr


def test_scripts_refuse_to_start_without_a_code_judge(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "LOG_DIR": str(tmp_path), "OUTPUT_DIR": str(tmp_path / "out"),
           "CODE_JUDGE_URL": "http://127.0.0.1:9", "PATH": os.environ["PATH"], "MODEL_PATH": TRAIN_MODEL}
    env.pop("SKIP_JUDGE_CHECK", None)
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    proc = subprocess.run([BASH, str(TRAIN)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "no code judge answers at http://127.0.0.1:9/ping" in proc.stderr


def test_examples_readme_describes_each_script_and_the_judge_setup():
    text = (EXAMPLES / "README.md").read_text()
    for script in SCRIPTS:
        assert script.name in text
    for needle in ("tmux", "redis-server", "rstar2-agent judge serve", "rstar2-agent judge workers",
                   "REDIS_URI=redis://", "--host 0.0.0.0"):
        assert needle in text, needle
