"""The example scripts on several nodes: CODE_JUDGE_URL is required, and the rollouts get it through a tool yaml
the script generates (examples/tool_config.sh), since the default yaml's `localhost` is each node's own machine.

As in test_examples.py, the scripts run for real with a stand-in `python3` that records its arguments.
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
AIME = EXAMPLES / "aime_eval.sh"
TOOL_CONFIGS = REPO / "rstar2_agent" / "config" / "tool_config"
TOOL_KEY = "actor_rollout_ref.rollout.multi_turn.tool_config_path"

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")


def launch(script: Path, tmp_path: Path, **env_overrides: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `script` with a fake python3; (the process, its Hydra overrides as a dict, empty if not launched)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text('#!/bin/sh\nprintf \'%s\\0\' "$@" > "$ARGV_OUT"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    argv_out = tmp_path / "argv"
    env = {k: v for k, v in os.environ.items() if k not in ("CODE_JUDGE_URL", "NNODES", "GENERATED_TOOL_CONFIG")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", ARGV_OUT=str(argv_out), SKIP_JUDGE_CHECK="1",
               HOME=str(tmp_path / "home"), LOG_DIR=str(tmp_path), OUTPUT_DIR=str(tmp_path / "out"),
               MODEL_PATH="/models/m", **env_overrides)
    proc = subprocess.run([BASH, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    overrides = {}
    if argv_out.exists():
        overrides = dict(a.split("=", 1) for a in argv_out.read_text().split("\0")[:-1] if "=" in a)
    return proc, overrides


@pytest.mark.parametrize("script", [TRAIN, AIME], ids=lambda p: p.name)
def test_several_nodes_need_code_judge_url(script, tmp_path):
    proc, overrides = launch(script, tmp_path, NNODES="2")
    assert proc.returncode == 1
    assert "NNODES=2 needs CODE_JUDGE_URL" in proc.stderr
    assert overrides == {}  # nothing launched


@pytest.mark.parametrize("url", ["http://localhost:8088", "http://127.0.0.1:8088", "http://[::1]:8088"])
def test_several_nodes_refuse_a_localhost_url(url, tmp_path):
    proc, overrides = launch(TRAIN, tmp_path, NNODES="4", CODE_JUDGE_URL=url)
    assert proc.returncode == 1 and "reachable from this machine only" in proc.stderr
    assert overrides == {}


def test_one_node_uses_the_repo_tool_yaml(tmp_path):
    proc, overrides = launch(TRAIN, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert overrides[TOOL_KEY] == str(TOOL_CONFIGS / "python_tool_config.yaml")


@pytest.mark.parametrize("script,generated", [
    (TRAIN, "rstar2-agent-qwen3-14b-sgl-tool-agent-verify-n32.tool_config.yaml"),
    (AIME, "out/tool_config.yaml"),
], ids=["train", "aime"])
def test_code_judge_url_goes_into_a_generated_tool_yaml(script, generated, tmp_path):
    from omegaconf import OmegaConf

    from rstar2_agent.tools.verl_tools import client_settings_from_config

    url = "http://10.0.0.1:8088"
    proc, overrides = launch(script, tmp_path, NNODES="2", CODE_JUDGE_URL=url)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / generated
    assert overrides[TOOL_KEY] == str(path)
    assert overrides["trainer.nnodes"] == "2"
    got, source = OmegaConf.load(path), OmegaConf.load(TOOL_CONFIGS / "python_tool_config.yaml")
    (tool,) = got.tools
    assert client_settings_from_config(OmegaConf.to_container(tool.config))[0] == url
    # the rest is the source yaml, unchanged
    assert OmegaConf.to_container(tool.config) == {**OmegaConf.to_container(source.tools[0].config), "url": url}
    assert tool.tool_schema == source.tools[0].tool_schema and tool.class_name == source.tools[0].class_name


def test_generated_tool_yaml_path_and_source_can_be_chosen(tmp_path):
    dest = tmp_path / "shared" / "tools.yaml"
    proc, overrides = launch(TRAIN, tmp_path, NNODES="2", CODE_JUDGE_URL="http://judge.internal:9000/",
                             TOOL_CONFIG=str(TOOL_CONFIGS / "jupyter_tool_config.yaml"),
                             GENERATED_TOOL_CONFIG=str(dest))
    assert proc.returncode == 0, proc.stderr
    assert overrides[TOOL_KEY] == str(dest)
    text = dest.read_text()
    assert "VerlJupyterTool" in text and 'url: "http://judge.internal:9000/"' in text


def test_write_tool_config_replaces_an_existing_url(tmp_path):
    from omegaconf import OmegaConf

    src = tmp_path / "src.yaml"
    src.write_text("tools:\n  - class_name: a.B\n    config:\n      url: http://old:1\n      type: native\n"
                   "      # a comment\n\n      host_port: 8088\n    tool_schema:\n      url: kept\n")
    dest = tmp_path / "dest.yaml"
    proc = subprocess.run([BASH, "-c", f'source "{EXAMPLES}/tool_config.sh"; '
                                       f'write_tool_config "{src}" http://new:2 "{dest}"'],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.to_container(OmegaConf.load(dest))
    assert cfg["tools"][0]["config"] == {"url": "http://new:2", "type": "native", "host_port": 8088}
    assert cfg["tools"][0]["tool_schema"] == {"url": "kept"}


def test_bad_code_judge_url(tmp_path):
    proc, overrides = launch(TRAIN, tmp_path, CODE_JUDGE_URL="10.0.0.1:8088")
    assert proc.returncode == 1 and "is not an http(s)://host:port URL" in proc.stderr
    assert overrides == {}
