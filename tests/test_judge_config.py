"""The judge's settings: the public code-judge's variable names, defaults, and clear errors (pydantic-settings)."""

import pytest

from code_judge.config import DEFAULT_PRELOAD, ConfigError, JudgeConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("REDIS_URI", "MAX_EXECUTION_TIME", "MAX_MEMORY", "MAX_WORKERS", "SANDBOX", "SANDBOX_TMPFS_SIZE",
                 "WORKER_HEARTBEAT_TTL", "LONG_BATCH_MAX_QUEUE_WAIT_TIME", "REDIS_SOCKET_TIMEOUT", "MAX_JOB_ATTEMPTS",
                 "PRELOAD_MODULES", "REDIS_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_and_derived_values():
    cfg = JudgeConfig.from_env()
    assert (cfg.max_execution_time, cfg.max_memory, cfg.sandbox, cfg.tmpfs_size, cfg.heartbeat_ttl) == (
        10.0, 512, "auto", 256, 10.0)
    assert cfg.preload_modules == DEFAULT_PRELOAD and cfg.redis_uri == ""
    assert (cfg.max_process_time, cfg.max_queue_wait_time, cfg.long_wait_time) == (15.0, 19.0, 3615.0)
    assert cfg.prefix == "js:rstar2cj"


def test_variables_are_read_with_their_public_names(monkeypatch):
    for name, value in {"REDIS_URI": "redis://h:1", "MAX_EXECUTION_TIME": "2.5", "MAX_WORKERS": "3",
                        "SANDBOX": "strict", "SANDBOX_TMPFS_SIZE": "64", "WORKER_HEARTBEAT_TTL": "4",
                        "MAX_MEMORY": "", "REDIS_KEY_PREFIX": "x"}.items():
        monkeypatch.setenv(name, value)
    cfg = JudgeConfig.from_env(max_workers=7)
    assert (cfg.redis_uri, cfg.max_execution_time, cfg.sandbox, cfg.tmpfs_size, cfg.heartbeat_ttl) == (
        "redis://h:1", 2.5, "strict", 64, 4.0)
    assert cfg.max_workers == 7  # keyword overrides win over the environment
    assert cfg.max_memory == 512  # an empty variable means the default
    assert cfg.prefix == "x:rstar2cj" and cfg.require_redis() == "redis://h:1"


def test_keyword_arguments_use_field_names_and_the_model_is_frozen():
    cfg = JudgeConfig(tmpfs_size=8, heartbeat_ttl=2, sandbox="none")
    assert (cfg.tmpfs_size, cfg.heartbeat_ttl, cfg.sandbox) == (8, 2.0, "none")
    with pytest.raises(Exception):
        cfg.sandbox = "auto"


@pytest.mark.parametrize("name,value,message", [
    ("MAX_EXECUTION_TIME", "abc", "MAX_EXECUTION_TIME='abc' is not a valid float"),
    ("MAX_MEMORY", "1.5", "MAX_MEMORY='1.5' is not a valid int"),
    ("SANDBOX_TMPFS_SIZE", "big", "SANDBOX_TMPFS_SIZE='big' is not a valid int"),
    ("WORKER_HEARTBEAT_TTL", "x", "WORKER_HEARTBEAT_TTL='x' is not a valid float"),
    ("MAX_EXECUTION_TIME", "0", "MAX_EXECUTION_TIME must be > 0"),
    ("MAX_MEMORY", "0", "MAX_MEMORY must be > 0 (MB)"),
    ("MAX_WORKERS", "0", "MAX_WORKERS must be >= 1"),
    ("LONG_BATCH_MAX_QUEUE_WAIT_TIME", "100",
     "LONG_BATCH_MAX_QUEUE_WAIT_TIME must be >= 3600 + MAX_EXECUTION_TIME + 5"),
    ("REDIS_SOCKET_TIMEOUT", "5", "REDIS_SOCKET_TIMEOUT must be >= 10 s"),
    ("SANDBOX", "off", "SANDBOX='off': use auto, strict or none"),
    ("MAX_JOB_ATTEMPTS", "0", "MAX_JOB_ATTEMPTS must be >= 1"),
])
def test_bad_values_raise_config_error_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        JudgeConfig.from_env()
    assert str(info.value) == message


def test_missing_redis_uri_is_a_config_error():
    with pytest.raises(ConfigError, match="REDIS_URI is not set"):
        JudgeConfig.from_env().require_redis()
