"""The CPU engine's choice of generator (rstar2_agent/engine/backend.py): vLLM only where it imports and takes
the model, the transformers `BatchingGenerator` otherwise (where install.sh left vLLM out: `--no-vllm`, or not
x86-64 Linux)."""

from __future__ import annotations

import pytest

from rstar2_agent import vllm_cpu
from rstar2_agent.engine import backend
from rstar2_agent.engine.config import compose
from rstar2_agent.engine.generator import BatchingGenerator
from rstar2_agent.engine.tiny import build_model, build_tokenizer

TOK = build_tokenizer()


@pytest.fixture
def no_vllm(monkeypatch):
    monkeypatch.setattr(vllm_cpu, "available", lambda: False)


def test_auto_falls_back_to_the_transformers_loop_without_vllm(no_vllm):
    cfg = compose("cpu_trainer_tiny")
    assert cfg.actor_rollout_ref.rollout.name == "auto"
    lines = []
    gen = backend.build_generator(cfg, build_model(TOK), TOK, "/some/model/folder", echo=lines.append)
    assert type(gen) is BatchingGenerator
    assert lines == ["rollout backend: transformers BatchingGenerator (`import vllm` fails in this Python)"]
    assert backend.sync_weights(gen, gen.model) is False  # it decodes with the trained model itself
    backend.close(gen)


def test_forcing_vllm_without_it_stops_with_the_reason(no_vllm):
    model = build_model(TOK)
    with pytest.raises(SystemExit, match="import vllm"):
        backend.choose("vllm", model.config, "/some/model/folder")
    assert backend.choose("hf", model.config, "/some/model/folder")[0] == "hf"
    with pytest.raises(SystemExit, match="choose one of"):
        backend.choose("sglang", model.config, "/some/model/folder")


def test_auto_skips_vllm_for_a_head_size_it_rejects_or_a_model_without_a_folder(monkeypatch):
    monkeypatch.setattr(vllm_cpu, "available", lambda: True)
    monkeypatch.setattr(vllm_cpu, "supported_head_sizes", lambda: [32, 64, 128])
    config = build_model(TOK).config  # head_dim 16
    assert vllm_cpu.head_size(config) == 16
    name, why = backend.choose("auto", config, "/some/model/folder")
    assert name == "hf" and "head size 16" in why
    name, why = backend.choose("auto", config, None)
    assert name == "hf" and "in-process" in why
    config.head_dim = 64
    assert backend.choose("auto", config, "/some/model/folder")[0] == "vllm"


def test_the_system_python_has_no_vllm_so_nothing_changes_there():
    if vllm_cpu.available():
        pytest.skip("vLLM imports here")
    assert backend.choose("auto", build_model(TOK).config, "/some/model/folder")[0] == "hf"


@pytest.mark.parametrize("preset", [None, "ext://sys.stdout"])
def test_vllm_logs_to_stderr_unless_told_otherwise(preset):
    """Our commands print tables and JSON on stdout; vLLM's log (stdout by default) is sent to stderr when
    rstar2_agent.vllm_cpu is imported, and a user's own VLLM_LOGGING_STREAM is kept."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_STREAM"}
    if preset:
        env["VLLM_LOGGING_STREAM"] = preset
    code = "import os, rstar2_agent.vllm_cpu; print(os.environ['VLLM_LOGGING_STREAM'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (preset or "ext://sys.stderr")


def test_pick_is_one_rule_for_the_engine_and_the_search():
    """`vllm_cpu.pick`, under both `choose` functions: its worked examples, and `vllm` insisting."""
    import doctest

    result = doctest.testmod(vllm_cpu, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
    with pytest.raises(SystemExit, match=r"--backend vllm, but no wheel; use auto or transformers"):
        vllm_cpu.pick("vllm", "no wheel", "transformers", "--backend ")
