"""SearchConfig: upstream keys and defaults, bundled configs by name or path, key=value overrides."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from rstar2_agent.math.config import (CONFIG_DIR, SearchConfig, SearchConfigError, config_names, load_config,
                                      resolve_config_path)

UPSTREAM = ["sample_mcts", "sft_sample_mcts", "sft_eval_mcts", "sft_eval_bs", "sft_eval_greedy"]


def test_defaults_are_upstreams():
    cfg = SearchConfig()
    assert (cfg.mode, cfg.temperature, cfg.top_p, cfg.top_k, cfg.best_of, cfg.max_tokens) == \
        ("mcts", 0.7, 1.0, -1, 1, 2048)
    assert (cfg.n_generate_sample, cfg.step_beam_width, cfg.max_depth, cfg.iterations) == (1, 1, 4, 1)
    assert (cfg.positive_reward, cfg.negative_reward, cfg.errors_threshold, cfg.c_puct) == (1.0, -1.0, 0, 2.0)
    assert not (cfg.need_value_func or cfg.update_leaf_value or cfg.is_sampling or cfg.terminal_sample)
    assert (cfg.batch_size, cfg.max_model_len, cfg.step_delim, cfg.stop, cfg.seed) == (-1, 8192, "\n", None, None)


def test_every_bundled_config_loads_with_known_keys():
    assert set(UPSTREAM + ["cpu"]) <= set(config_names())
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    for name in config_names():
        raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert set(raw) <= fields, name
        cfg = load_config(name)
        for key, value in raw.items():
            if key in ("prompt_path", "few_shot_path"):  # bundled files resolve to their full path
                assert getattr(cfg, key) == str(CONFIG_DIR / value), (name, key)
            else:
                assert getattr(cfg, key) == value, (name, key)


def test_upstream_notable_values():
    s = load_config("sample_mcts")
    assert (s.n_generate_sample, s.iterations, s.max_depth, s.errors_threshold, s.is_sampling,
            s.need_value_func, s.terminal_sample, s.num_few_shot) == (12, 48, 16, 2, True, False, True, 2)
    assert "<end_of_output>" in s.stop
    e = load_config("sft_eval_mcts")
    assert (e.n_generate_sample, e.iterations, e.is_sampling, e.need_value_func, e.update_leaf_value) == \
        (32, 12, False, True, True)
    b = load_config("sft_eval_bs")
    assert (b.mode, b.n_generate_sample, b.step_beam_width, b.need_value_func) == ("bs", 8, 8, True)
    g = load_config("sft_eval_greedy")
    assert (g.temperature, g.n_generate_sample, g.iterations, g.max_depth, g.max_tokens, g.seed) == \
        (0.0, 1, 1, 2, 4096, 42)
    assert g.stop == ["<end_of_code>", "<end_of_answer>"]
    c = load_config("cpu")
    assert (c.n_generate_sample, c.iterations, c.max_depth, c.max_tokens, c.batch_size) == (4, 4, 6, 256, 16)


def test_name_path_and_upstream_style_path(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("iterations: 3\nmode: bs\n")
    assert load_config(str(own)).iterations == 3
    assert resolve_config_path("config/sft_eval_bs.yaml") == CONFIG_DIR / "sft_eval_bs.yaml"
    assert resolve_config_path("sft_eval_bs.yaml") == CONFIG_DIR / "sft_eval_bs.yaml"
    with pytest.raises(SearchConfigError, match="no config file"):
        load_config("no_such_config")


def test_overrides_parse_as_yaml():
    cfg = load_config("cpu", ["iterations=9", "temperature=1", "stop=[<a>, <b>]", "seed=null", "is_sampling=false"])
    assert cfg.iterations == 9 and cfg.temperature == 1.0 and isinstance(cfg.temperature, float)
    assert cfg.stop == ["<a>", "<b>"] and cfg.seed is None and cfg.is_sampling is False


@pytest.mark.parametrize("override, message", [
    ("iteratons=3", "unknown key"),
    ("iterations=many", "iterations must be int"),
    ("need_value_func=1", "need_value_func must be bool"),
    ("mode=dfs", "mode must be"),
    ("n_generate_sample=0", "n_generate_sample must be >= 1"),
    ("max_depth=null", "may not be null"),
    ("iterations", "not key=value"),
    ("dtype=fp8", "dtype must be one of"),
])
def test_bad_overrides_fail_clearly(override, message):
    with pytest.raises(SearchConfigError, match=message):
        load_config("cpu", [override])


def test_unknown_key_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 2\nbeam: 3\n")
    with pytest.raises(SearchConfigError, match="unknown key.*beam"):
        load_config(str(bad))
