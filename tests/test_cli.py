"""`rstar2-agent judge up` starts Redis, workers and the API on 127.0.0.1 and stops all of them on SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from code_judge.local import free_port
from conftest import read_banner


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_judge_up_serves_and_stops_cleanly(sig):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rstar2_agent", "judge", "up", "--port", str(port), "--max-workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        banner = read_banner(proc, "code judge up at")
        assert f"code judge up at http://127.0.0.1:{port}" in banner, banner
        assert "isolation:" in banner
        r = httpx.post(f"http://127.0.0.1:{port}/run", json={"type": "python", "solution": "print(7*6)"}, timeout=60)
        assert r.json()["stdout"] == "42\n"
        children = descendants(proc.pid)
        assert any("redis-server" in " ".join(c.cmdline()) for c in children)
        listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == "LISTEN"}
        assert listening == {"127.0.0.1"}
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(c) for c in children):
            time.sleep(0.1)
        assert [c for c in children if alive(c)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_redis_uri_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URI"}
    out = subprocess.run([sys.executable, "-m", "rstar2_agent", "judge", "workers"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "REDIS_URI is not set" in out.stderr
