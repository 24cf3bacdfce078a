"""Settings of the code judge, read from the same environment variables as the public code-judge.

One frozen dataclass is the single source of truth; `JudgeConfig.from_env()` builds it and checks it.
Derived values follow the public service:

    MAX_PROCESS_TIME               = MAX_EXECUTION_TIME + 5
    MAX_QUEUE_WAIT_TIME            = MAX_PROCESS_TIME + MAX_QUEUE_WORK_LIFE_TIME
    LONG_BATCH_MAX_QUEUE_WAIT_TIME = 3600 + MAX_PROCESS_TIME        (may be raised, never lowered)

Variables that only this implementation has are marked "ours" below.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

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


def _get(env: Mapping[str, str], name: str, default, cast):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {cast.__name__}") from exc


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
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
    sandbox: str = "auto"  # auto | strict (refuse to start without namespaces) | none
    sandbox_uid_base: int = 200000  # executed code runs as uid base+slot (root only)
    tmpfs_size: int = 256  # MB of private /tmp per worker
    preload_modules: str = DEFAULT_PRELOAD
    preload_tiers: str = DEFAULT_TIERS  # ";"-separated module sets, each a zygote on top of the previous
    preload_warmup: str = DEFAULT_WARMUP  # code run once in the last (heaviest) tier
    heartbeat_ttl: float = 10.0  # s; a worker silent this long is dead and its job is retried
    max_job_attempts: int = 2  # a job whose worker died this many times is answered internal_error

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "JudgeConfig":
        env = os.environ if env is None else env
        d = cls()
        values = dict(
            redis_uri=_get(env, "REDIS_URI", d.redis_uri, str),
            max_execution_time=_get(env, "MAX_EXECUTION_TIME", d.max_execution_time, float),
            max_memory=_get(env, "MAX_MEMORY", d.max_memory, int),
            max_workers=_get(env, "MAX_WORKERS", d.max_workers, int),
            max_stdout_error_length=_get(env, "MAX_STDOUT_ERROR_LENGTH", d.max_stdout_error_length, int),
            max_queue_work_life_time=_get(env, "MAX_QUEUE_WORK_LIFE_TIME", d.max_queue_work_life_time, float),
            long_batch_max_queue_wait_time=_get(
                env, "LONG_BATCH_MAX_QUEUE_WAIT_TIME", d.long_batch_max_queue_wait_time, float
            ),
            max_batch_chunk_size=_get(env, "MAX_BATCH_CHUNK_SIZE", d.max_batch_chunk_size, int),
            max_long_batch_chunk_size=_get(env, "MAX_LONG_BATCH_CHUNK_SIZE", d.max_long_batch_chunk_size, int),
            redis_key_prefix=_get(env, "REDIS_KEY_PREFIX", d.redis_key_prefix, str),
            redis_result_expire=_get(env, "REDIS_RESULT_EXPIRE", d.redis_result_expire, int),
            redis_socket_timeout=_get(env, "REDIS_SOCKET_TIMEOUT", d.redis_socket_timeout, float),
            python_execute_command=_get(env, "PYTHON_EXECUTE_COMMAND", d.python_execute_command, str),
            cpp_compile_command=_get(env, "CPP_COMPILE_COMMAND", d.cpp_compile_command, str),
            cpp_execute_command=_get(env, "CPP_EXECUTE_COMMAND", d.cpp_execute_command, str),
            error_case_save_path=_get(env, "ERROR_CASE_SAVE_PATH", d.error_case_save_path, str),
            max_processes=_get(env, "MAX_PROCESSES", d.max_processes, int),
            max_file_size=_get(env, "MAX_FILE_SIZE", d.max_file_size, int),
            max_open_files=_get(env, "MAX_OPEN_FILES", d.max_open_files, int),
            max_code_length=_get(env, "MAX_CODE_LENGTH", d.max_code_length, int),
            max_request_size=_get(env, "MAX_REQUEST_SIZE", d.max_request_size, int),
            max_batch_size=_get(env, "MAX_BATCH_SIZE", d.max_batch_size, int),
            sandbox=_get(env, "SANDBOX", d.sandbox, str),
            sandbox_uid_base=_get(env, "SANDBOX_UID_BASE", d.sandbox_uid_base, int),
            tmpfs_size=_get(env, "SANDBOX_TMPFS_SIZE", d.tmpfs_size, int),
            preload_modules=_get(env, "PRELOAD_MODULES", d.preload_modules, str),
            preload_tiers=_get(env, "PRELOAD_TIERS", d.preload_tiers, str),
            preload_warmup=_get(env, "PRELOAD_WARMUP", d.preload_warmup, str),
            heartbeat_ttl=_get(env, "WORKER_HEARTBEAT_TTL", d.heartbeat_ttl, float),
            max_job_attempts=_get(env, "MAX_JOB_ATTEMPTS", d.max_job_attempts, int),
        )
        values.update(overrides)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.max_execution_time <= 0:
            raise ConfigError("MAX_EXECUTION_TIME must be > 0")
        if self.max_memory <= 0:
            raise ConfigError("MAX_MEMORY must be > 0 (MB)")
        if self.max_workers < 1:
            raise ConfigError("MAX_WORKERS must be >= 1")
        if self.long_batch_max_queue_wait_time and self.long_batch_max_queue_wait_time < 3600 + self.max_process_time:
            raise ConfigError("LONG_BATCH_MAX_QUEUE_WAIT_TIME must be >= 3600 + MAX_EXECUTION_TIME + 5")
        if self.redis_socket_timeout < 10:
            raise ConfigError("REDIS_SOCKET_TIMEOUT must be >= 10 s")
        if self.sandbox not in ("auto", "strict", "none"):
            raise ConfigError(f"SANDBOX={self.sandbox!r}: use auto, strict or none")
        if self.max_job_attempts < 1:
            raise ConfigError("MAX_JOB_ATTEMPTS must be >= 1")

    def require_redis(self) -> str:
        if not self.redis_uri:
            raise ConfigError("REDIS_URI is not set (e.g. REDIS_URI=redis://127.0.0.1:6379)")
        return self.redis_uri
