"""Fixtures: a real redis-server and a real code judge (worker processes + API), started and stopped here."""

from __future__ import annotations

import time

import httpx
import pytest

from code_judge.local import LocalJudge, RedisServer

# Secrets the service's own environment holds; no executed code may see them.
SECRET_ENV = {"RSTAR2_TEST_SECRET": "s3cr3t-token-do-not-leak"}
JUDGE_ENV = {
    "MAX_EXECUTION_TIME": "3", "MAX_MEMORY": "256", "MAX_STDOUT_ERROR_LENGTH": "1000",
    "MAX_REQUEST_SIZE": str(8 * 1024 * 1024), "MAX_BATCH_SIZE": "500", **SECRET_ENV,
}


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def judge(redis_server):
    """The shared service: 2 workers, 3 s time limit. Tests that break things start their own."""
    with LocalJudge(workers=2, redis_uri=redis_server.uri, env=JUDGE_ENV) as j:
        yield j


@pytest.fixture(scope="session")
def judge_url(judge) -> str:
    return judge.url


@pytest.fixture()
def http(judge_url):
    with httpx.Client(base_url=judge_url, timeout=120) as client:
        yield client


def run_code(http: httpx.Client, code: str, stdin: str | None = None, **fields) -> dict:
    resp = http.post("/run", json={"type": "python", "solution": code, "input": stdin, **fields})
    assert resp.status_code == 200, resp.text
    return resp.json()


def run_batch(http: httpx.Client, codes: list[str], path: str = "/run/long-batch") -> list[dict]:
    body = {"type": "batch", "submissions": [{"type": "python", "solution": c} for c in codes]}
    resp = http.post(path, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def read_banner(proc, until: str, timeout_s: float = 120) -> str:
    """A started `judge up` process's stdout up to the line holding `until` (or EOF, or `timeout_s`)."""
    lines = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if until in line or not line:
            break
    return "".join(lines)
