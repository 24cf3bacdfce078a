"""Fixtures: a real redis-server and a real code judge (worker processes + API), started and stopped here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from code_judge.local import LocalJudge, RedisServer, free_port

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


# ---- OpenAI-compatible servers in subprocesses: our completions server, `vllm serve`

def wait_for(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not up after {timeout_s}s: {log.read_text()[-2000:]}")


def start_server(cmd: list[str], log: Path, url: str, timeout_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(url, proc, timeout_s, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()




def _vllm_reason() -> str | None:
    from rstar2_agent import vllm_cpu

    if not vllm_cpu.available():
        return "vLLM is not installed in this Python (`import vllm` fails; bash install.sh installs it on x86-64 Linux)"
    return None


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """vLLM's OpenAI server on the default CPU model (SmolLM2-135M-Instruct), for the whole session. Started as
    `python -m vllm.entrypoints.openai.api_server`, what `vllm serve` runs: vllm-cpu 0.31.0's `vllm` command
    fails at start (it asks for the version of a package named `vllm`; the CPU build's is `vllm-cpu`)."""
    reason = _vllm_reason()
    if reason:
        pytest.skip(reason)
    from rstar2_agent.engine.models import prepare_default_model

    model = prepare_default_model()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                             "--port", str(port), "--max-model-len", "2048"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for(url, proc, 600, log)
    except BaseException:
        stop_server(proc)
        raise
    yield url, model
    stop_server(proc)
