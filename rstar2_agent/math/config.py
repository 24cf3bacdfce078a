"""``SearchConfig``: upstream rStar-Math's search settings, same keys and defaults, loaded from yaml.

Upstream users pass ``--custom_cfg config/sft_eval_mcts.yaml``; ours accepts the same file, a file of ours
by NAME (``sft_eval_mcts``, the five upstream configs plus ``cpu``, under ``rstar2_agent/config/math/``) or
any PATH, then ``key=value`` overrides (values parsed as yaml: ``iterations=8``, ``stop=[a,b]``,
``seed=null``). Unknown keys and values of the wrong type fail with a message naming the key, so a typo
never runs a 48-rollout search with a default.

>>> cfg = load_config("sft_eval_greedy", ["max_tokens=64"])
>>> (cfg.mode, cfg.temperature, cfg.n_generate_sample, cfg.max_tokens)
('mcts', 0.0, 1, 64)
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

__all__ = ["SearchConfig", "SearchConfigError", "CONFIG_DIR", "config_names", "resolve_config_path",
           "resolve_data_file", "load_config", "parse_overrides"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "math"


class SearchConfigError(ValueError):
    """A search config that cannot be used: unknown key, wrong type, bad value or missing file."""


@dataclass
class SearchConfig:
    """Upstream ``BaseConfig``: every key and default (reference section 10.2)."""

    mode: str = "mcts"  # "mcts" or "bs" (step beam search)
    model_dir: Optional[str] = None
    reward_model_dir: Optional[str] = None
    few_shot_path: Optional[str] = None
    prompt_path: Optional[str] = None
    num_few_shot: int = 0
    prompt_wrap: str = "rstar"
    result_unwrap: str = "rstar"
    step_delim: str = "\n"
    # generation
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1
    best_of: int = 1
    max_tokens: int = 2048
    seed: Optional[int] = None
    swap_space: int = 8
    n_generate_sample: int = 1
    stop: Optional[list] = None
    max_model_len: int = 8192
    llm_gpu_memory_utilization: float = 0.5
    tp: int = 1
    # ours: the vLLM backend's weights dtype. auto: the model's on a GPU; on CPU bfloat16 where the CPU has
    # bf16 instructions (AMX, AVX512-BF16), else float32 (rstar2_agent.vllm_cpu.cpu_dtype)
    dtype: str = "auto"
    # search
    step_beam_width: int = 1
    max_depth: int = 4
    iterations: int = 1
    positive_reward: float = 1.0
    negative_reward: float = -1.0
    errors_threshold: int = 0
    need_value_func: bool = False
    update_leaf_value: bool = False
    c_puct: float = 2.0
    is_sampling: bool = False
    prune: bool = False
    terminal_sample: bool = False
    batch_size: int = -1
    save_intermediate_rollouts: bool = True

    def __post_init__(self) -> None:
        check_values(self)


DTYPES = ("auto", "float32", "bfloat16", "float16")
_POSITIVE = ("n_generate_sample", "max_depth", "iterations", "step_beam_width", "max_tokens", "best_of", "tp")


def check_values(cfg: SearchConfig) -> None:
    """Reject values the search cannot use, naming the key."""
    if cfg.mode not in ("mcts", "bs"):
        raise SearchConfigError(f"mode must be 'mcts' or 'bs', got {cfg.mode!r}")
    for key in _POSITIVE:
        if getattr(cfg, key) < 1:
            raise SearchConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.temperature < 0:
        raise SearchConfigError(f"temperature must be >= 0, got {cfg.temperature}")
    if not 0 < cfg.top_p <= 1:
        raise SearchConfigError(f"top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.errors_threshold < 0:
        raise SearchConfigError(f"errors_threshold must be >= 0, got {cfg.errors_threshold}")
    if cfg.batch_size == 0 or cfg.batch_size < -1:
        raise SearchConfigError(f"batch_size must be -1 (all) or >= 1, got {cfg.batch_size}")
    if cfg.dtype not in DTYPES:
        raise SearchConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.stop is not None and not all(isinstance(s, str) for s in cfg.stop):
        raise SearchConfigError(f"stop must be a list of strings, got {cfg.stop!r}")


_FIELDS = {f.name: f for f in dataclasses.fields(SearchConfig)}


def _coerce(key: str, value: Any) -> Any:
    """``value`` checked against the type of ``key`` (ints are accepted for floats)."""
    hint = typing.get_type_hints(SearchConfig)[key]
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    base = typing.get_origin(base) or base
    if value is None:
        if optional:
            return None
        raise SearchConfigError(f"{key} may not be null")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is list:
        value = [value] if isinstance(value, str) else value
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, base)
    if not ok:
        raise SearchConfigError(f"{key} must be {getattr(base, '__name__', base)}, got {value!r}")
    return value


def config_names() -> list[str]:
    """The names of our bundled configs (``sample_mcts``, ..., ``cpu``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """An existing file path as given, else a bundled config by name (``sft_eval_bs``, ``sft_eval_bs.yaml``,
    or upstream's ``config/sft_eval_bs.yaml`` when that file is not here)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / (path.stem + ".yaml")
    if bundled.is_file():
        return bundled
    raise SearchConfigError(f"no config file or bundled config named {name_or_path!r}; "
                            f"bundled: {', '.join(config_names())}")


_DATA_FILE_KEYS = ("prompt_path", "few_shot_path")


def resolve_data_file(key: str, value: Optional[str]) -> Optional[str]:
    """A prompt or few-shot file as given when it exists, else the bundled one of that relative path
    (``prompts/mcts_prompt.json`` under ``rstar2_agent/config/math/``); neither is an error naming ``key``."""
    if not value:
        return value
    if Path(value).is_file():
        return value
    bundled = CONFIG_DIR / value
    if not Path(value).is_absolute() and bundled.is_file():
        return str(bundled)
    raise SearchConfigError(f"{key}: no file {value!r} (nor a bundled one under {CONFIG_DIR})")


def parse_overrides(items: Iterable[str]) -> dict:
    """``["iterations=8", "stop=[a, b]"]`` -> ``{"iterations": 8, "stop": ["a", "b"]}`` (values as yaml)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SearchConfigError(f"override {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise SearchConfigError(f"override {item!r}: bad value ({exc})") from None
    return out


def from_dict(values: dict, source: str = "config") -> SearchConfig:
    """A ``SearchConfig`` from a mapping; unknown keys and wrong types raise ``SearchConfigError``."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise SearchConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
    return SearchConfig(**{k: _coerce(k, v) for k, v in values.items()})


def load_config(custom_cfg: Optional[str] = None, overrides: Iterable[str] = ()) -> SearchConfig:
    """Defaults, then the yaml named by ``custom_cfg`` (NAME or PATH), then ``key=value`` overrides."""
    values: dict = {}
    source = "defaults"
    if custom_cfg:
        path = resolve_config_path(custom_cfg)
        source = str(path)
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise SearchConfigError(f"{path}: expected a mapping of keys, got {type(loaded).__name__}")
        values.update(loaded)
    extra = parse_overrides(overrides)
    unknown = sorted(set(extra) - set(_FIELDS))
    if unknown:
        raise SearchConfigError(f"override: unknown key(s) {', '.join(unknown)}")
    values.update(extra)
    for key in _DATA_FILE_KEYS:
        if isinstance(values.get(key), str):
            values[key] = resolve_data_file(key, values[key])
    return from_dict(values, source)
