"""Settings of the code judge, read from the same environment variables as the public code-judge.

One frozen pydantic-settings model is the single source of truth: `JudgeConfig()` (or `JudgeConfig.from_env()`)
reads the environment, keyword arguments override it, and a bad value raises `ConfigError` naming the variable.
An empty variable means its default.
Derived values follow the public service:

    MAX_PROCESS_TIME               = MAX_EXECUTION_TIME + 5
    MAX_QUEUE_WAIT_TIME            = MAX_PROCESS_TIME + MAX_QUEUE_WORK_LIFE_TIME
    LONG_BATCH_MAX_QUEUE_WAIT_TIME = 3600 + MAX_PROCESS_TIME        (may be raised, never lowered)

Variables that only this implementation has are marked "ours" below.
"""

from __future__ import annotations

import os

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PRELOAD = (
    "math,cmath,fractions,decimal,itertools,functools,collections,heapq,bisect,re,random,string,json,statistics"
)
DEFAULT_TIERS = "numpy,numpy.random,numpy.linalg;sympy"
# Run once in the heaviest zygote: sympy's first solve/simplify in a process costs ~30 ms of lazy imports and
# cache building; done here, every job forked afterwards starts warm.
DEFAULT_WARMUP = (
    "import sympy as sp\n"
    "x, y = sp.symbols('x y')\n"
    "sp.solve(x**2 - 5*x + 6, x); sp.solve([x + y - 3, x - y - 1], [x, y])\n"
    "sp.simplify(sp.sin(x)**2 + sp.cos(x)**2); sp.factor(x**2 - y**2); sp.expand((x + 1)**5)\n"
    "sp.integrate(x**2, (x, 0, 1)); sp.diff(sp.sin(x) * x, x); sp.limit(sp.sin(x) / x, x, 0)\n"
    "sp.nsimplify(0.25); sp.N(sp.pi, 30); sp.Rational(1, 3) + sp.sqrt(2); sp.latex(x**2)\n"
    "sp.isprime(97); sp.factorint(360); sp.binomial(10, 3); sp.Matrix([[1, 2], [3, 4]]).det()\n"
)


class ConfigError(ValueError):
    """A setting is missing or out of range; the message names the variable."""


def _env_name(field: str) -> str:
    alias = JudgeConfig.model_fields[field].validation_alias if field in JudgeConfig.model_fields else None
    return alias if isinstance(alias, str) else field.upper()


def env_names() -> list[str]:
    """Every environment variable the judge reads, in field order."""
    return [_env_name(f) for f in JudgeConfig.model_fields]


def _describe(exc: ValidationError) -> str:
    """The first error, in the words the hand-written parser used."""
    err = exc.errors()[0]
    if err["type"] == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    name = _env_name(str(err["loc"][0])) if err["loc"] else "?"
    kind = "int" if err["type"].startswith("int") else "float" if err["type"].startswith("float") else err["type"]
    return f"{name}={err['input']!r} is not a valid {kind}"


class JudgeConfig(BaseSettings):
    """Every field is read from the upper-cased variable of the same name unless an alias says otherwise."""

    model_config = SettingsConfigDict(frozen=True, env_ignore_empty=True, populate_by_name=True, extra="ignore")

    redis_uri: str = ""
    max_execution_time: float = 10.0  # s, wall clock and CPU time of one submission
    max_memory: int = 512  # MB the code may allocate on top of the warm interpreter
    max_workers: int = os.cpu_count() or 1
    max_stdout_error_length: int = 1000  # characters kept from the head of stdout / stderr
    max_queue_work_life_time: float = 4.0  # s a non-long item may wait in the queue before it starts
    long_batch_max_queue_wait_time: float = 0.0  # 0 = 3600 + max_process_time
    max_batch_chunk_size: int = 2  # items per pipelined enqueue round for /batch
    max_long_batch_chunk_size: int = 100  # the same for /long-batch
    redis_key_prefix: str = "js"
    redis_result_expire: int = 60
    redis_socket_timeout: float = 60.0
    python_execute_command: str = ""  # empty = warm fork server; else e.g. "python3 {source}" (cold, as upstream)
    cpp_compile_command: str = "g++ -O2 -o {exe} {source}"
    cpp_execute_command: str = "{exe}"
    error_case_save_path: str = ""
    # ours
    max_processes: int = 32  # RLIMIT_NPROC per sandbox (its own uid)
    max_file_size: int = 16  # MB, RLIMIT_FSIZE; bounds a stdout flood too
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_code_length: int = 4 * 1024 * 1024  # bytes of solution + input per submission
    max_request_size: int = 64 * 1024 * 1024  # bytes of one HTTP body
    max_batch_size: int = 10000  # submissions in one batch request
    sandbox: str = "auto"  # auto | strict (refuse to start without namespaces) | none; `judge workers`: strict
    sandbox_uid_base: int = 200000  # executed code runs as uid base+slot (root only)
    tmpfs_size: int = Field(256, validation_alias="SANDBOX_TMPFS_SIZE")  # MB of private /tmp per worker
    preload_modules: str = DEFAULT_PRELOAD
    preload_tiers: str = DEFAULT_TIERS  # ";"-separated module sets, each a zygote on top of the previous
    preload_warmup: str = DEFAULT_WARMUP  # code run once in the last (heaviest) tier
    heartbeat_ttl: float = Field(10.0, validation_alias="WORKER_HEARTBEAT_TTL")  # s; silent this long = dead
    max_job_attempts: int = 2  # a job whose worker died this many times is answered internal_error

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def from_env(cls, **overrides) -> "JudgeConfig":
        """The environment's settings, `overrides` (field names) on top; raises `ConfigError`."""
        return cls(**overrides)

    @model_validator(mode="after")
    def _check(self) -> "JudgeConfig":
        checks = [
            (self.max_execution_time <= 0, "MAX_EXECUTION_TIME must be > 0"),
            (self.max_memory <= 0, "MAX_MEMORY must be > 0 (MB)"),
            (self.max_workers < 1, "MAX_WORKERS must be >= 1"),
            (0 < self.long_batch_max_queue_wait_time < 3600 + self.max_process_time,
             "LONG_BATCH_MAX_QUEUE_WAIT_TIME must be >= 3600 + MAX_EXECUTION_TIME + 5"),
            (self.redis_socket_timeout < 10, "REDIS_SOCKET_TIMEOUT must be >= 10 s"),
            (self.sandbox not in ("auto", "strict", "none"), f"SANDBOX={self.sandbox!r}: use auto, strict or none"),
            (self.max_job_attempts < 1, "MAX_JOB_ATTEMPTS must be >= 1"),
        ]
        for failed, message in checks:
            if failed:
                raise ValueError(message)
        return self

    @property
    def max_process_time(self) -> float:
        return self.max_execution_time + 5

    @property
    def max_queue_wait_time(self) -> float:
        return self.max_process_time + self.max_queue_work_life_time

    @property
    def long_wait_time(self) -> float:
        return self.long_batch_max_queue_wait_time or 3600 + self.max_process_time

    @property
    def prefix(self) -> str:
        return f"{self.redis_key_prefix}:rstar2cj"

    def require_redis(self) -> str:
        if not self.redis_uri:
            raise ConfigError("REDIS_URI is not set (e.g. REDIS_URI=redis://127.0.0.1:6379)")
        return self.redis_uri
