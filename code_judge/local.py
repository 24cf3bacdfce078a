"""Run the whole service on one machine: a private redis-server, the worker manager and the API.

Used by `rstar2-agent judge up`, by the training job's default (a local code judge) and by the tests:

    with LocalJudge(workers=2) as judge:
        print(judge.url)            # http://127.0.0.1:<port>
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

import httpx
import redis

# BLMOVE (code_judge/worker/process.py) and LPOP with a count (code_judge/api/dispatch.py) came in Redis 6.2.
MIN_REDIS_VERSION = (6, 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """`preexec_fn` of every process started here: the kernel sends it SIGTERM when the thread that started
    it dies, even by SIGKILL, so a killed training run or test session leaves no Redis or judge behind
    (Linux; elsewhere a no-op). Start LocalJudge from a long-lived thread (the main one)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def parse_redis_version(text: str) -> Optional[tuple[int, ...]]:
    """The version in `redis-server --version` output ("Redis server v=7.0.15 sha=..." -> (7, 0, 15)); None when
    there is none."""
    m = re.search(r"\bv=(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in m.group(1).split(".")) if m else None


@functools.lru_cache(maxsize=None)
def check_redis_server_version(exe: str) -> tuple[int, ...]:
    """Raise RuntimeError, saying what to do, when the redis-server at `exe` is older than MIN_REDIS_VERSION."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    version = parse_redis_version(out)
    want = ".".join(map(str, MIN_REDIS_VERSION))
    if version is None:
        raise RuntimeError(f"cannot tell the version of {exe} from `redis-server --version`: {out.strip()!r}; "
                           f"the code judge needs Redis >= {want}")
    if version < MIN_REDIS_VERSION:
        raise RuntimeError(
            f"{exe} is Redis {'.'.join(map(str, version))}, but the code judge needs Redis >= {want} (BLMOVE, LPOP "
            f"with a count). Ubuntu 22.04 and Debian 11 ship 6.0: install a newer redis-server from "
            f"https://packages.redis.io (run `bash install.sh` for the commands) or put one first on PATH")
    return version


class RedisServer:
    """A private, non-persistent redis-server on 127.0.0.1."""

    def __init__(self, port: Optional[int] = None):
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.dir = tempfile.mkdtemp(prefix="cj-redis-")

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> "RedisServer":
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: run `bash install.sh` (or apt-get install redis-server)")
        check_redis_server_version(exe)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _code_judge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "code_judge", *args]


class LocalJudge:
    """Redis (private unless `redis_uri` is given) + `workers` worker processes + the API on `port`."""

    def __init__(self, workers: int = 2, port: Optional[int] = None, host: str = "127.0.0.1",
                 redis_uri: Optional[str] = None, env: Optional[dict] = None, api_workers: int = 1):
        self.workers = workers
        self.port = port or free_port()
        self.host = host
        self.api_workers = api_workers
        self.redis: Optional[RedisServer] = None
        self.redis_uri = redis_uri
        self.env = {"SANDBOX": "auto", **os.environ, **(env or {})}  # `judge workers` alone defaults to strict
        self.manager: Optional[subprocess.Popen] = None
        self.api: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 120.0) -> "LocalJudge":
        if self.redis_uri is None:
            self.redis = RedisServer().start()
            self.redis_uri = self.redis.uri
        self.env["REDIS_URI"] = self.redis_uri
        self.manager = subprocess.Popen(_code_judge_cmd("workers", "--max-workers", str(self.workers)), env=self.env,
                                        preexec_fn=die_with_parent)
        self.api = subprocess.Popen(
            _code_judge_cmd("serve", "--host", self.host, "--port", str(self.port),
                            "--workers", str(self.api_workers), "--log-level", "warning"),
            env=self.env, preexec_fn=die_with_parent,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0, workers: Optional[int] = None) -> dict:
        """Block until the API answers and `workers` workers have a heartbeat."""
        want = self.workers if workers is None else workers
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name, proc in (("worker manager", self.manager), ("API", self.api)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"the code judge {name} exited with {proc.returncode}")
            try:
                last = httpx.get(self.url + "/status/detail", timeout=2).json()
                if last.get("workers", {}).get("alive", 0) >= want:
                    return last
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"code judge not ready after {timeout:.0f}s (last status: {last})")

    def stop(self) -> None:
        for proc in (self.api, self.manager):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (self.api, self.manager):
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.redis is not None:
            self.redis.close()

    def __enter__(self) -> "LocalJudge":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
