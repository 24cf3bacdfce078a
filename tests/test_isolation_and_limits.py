"""Executed code is isolated (network, processes, files, environment) and bounded (time, memory, output)."""

import os

import pytest

from code_judge.config import JudgeConfig
from code_judge.worker.executor import Executor
from conftest import SECRET_ENV, run_batch, run_code

UID_BASE = JudgeConfig().sandbox_uid_base


def leftover_sleepers(timeout: float = 10.0) -> list[str]:
    """`sleep 30x` processes of a sandbox uid still alive (seen from outside the sandbox).

    Clean-up runs right after a job's answer goes out, so give it a moment before calling them leftovers.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/status") as f:
                    lines = f.read().splitlines()
                uid = int(next(line for line in lines if line.startswith("Uid:")).split()[1])
                state = next(line for line in lines if line.startswith("State:")).split()[1]
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode()
            except (OSError, StopIteration):
                continue
            if uid >= UID_BASE and state != "Z" and cmdline.startswith("sleep 30"):
                found.append(f"{pid} uid={uid} {cmdline}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture()
def isolation(http):
    iso = http.get("/status/detail").json()["isolation"]
    if os.geteuid() == 0:
        # On this project's machines (root, namespaces allowed) every layer must be on.
        assert iso["level"] == "full", iso
    return iso


def test_network_is_unreachable(http, redis_server, judge, isolation):
    code = f"""
import socket
for host, port in [("127.0.0.1", {redis_server.port}), ("127.0.0.1", {judge.port}), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=2)
        print("CONNECTED", host, port)
    except OSError as exc:
        print("blocked", host, port, exc.errno)
"""
    r = run_code(http, code)
    assert r["run_success"], r
    assert "CONNECTED" not in r["stdout"] and r["stdout"].count("blocked") == 3


def test_no_secrets_and_no_privileges(http, isolation):
    code = r"""
import os, glob
secret = os.environ.get("RSTAR2_TEST_SECRET", "")
leaks = [k for k in os.environ if "REDIS" in k or "SECRET" in k]
for path in ["/proc/self/environ"] + glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        data = open(path, "rb").read()
        if b"s3cr3t" in data or b"redis://" in data:
            leaks.append(path)
    except OSError:
        pass
print("uid", os.getuid(), "euid", os.geteuid(), "leaks", leaks, "secret", secret)
for target in ("/etc/shadow", "/root/.bashrc", "/root/.profile"):
    try:
        open(target).read(); print("READ", target)
    except OSError:
        pass
try:
    open("/etc/judge-was-here", "w"); print("WROTE /etc")
except OSError:
    pass
"""
    r = run_code(http, code)
    assert r["run_success"], r
    out = r["stdout"]
    secret = SECRET_ENV["RSTAR2_TEST_SECRET"]
    assert secret not in out and "REDIS_URI" not in out
    assert "leaks [] secret \n" in out
    assert "uid 0 " not in out and "euid 0 " not in out
    assert "READ" not in out and "WROTE" not in out


def test_every_process_dies_with_the_job(http, isolation):
    code = """
import os, subprocess, time
subprocess.Popen(["sleep", "300"], start_new_session=True)
if os.fork() == 0:            # a classic daemon: fork, setsid, fork again
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "301"])
    os._exit(0)
print("spawned")
"""
    r = run_code(http, code)
    assert r["stdout"] == "spawned\n"
    assert leftover_sleepers() == []


def test_files_do_not_persist_between_jobs(http, isolation):
    writer = """
import os
for d in ("/tmp", "/var/tmp", "/dev/shm", "."):
    with open(os.path.join(d, "cj-persist-probe"), "w") as f:
        f.write("x")
print(os.getcwd())
"""
    reader = """
import os
print([d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.exists(os.path.join(d, "cj-persist-probe"))])
"""
    w = run_code(http, writer)
    assert w["run_success"], w
    # enough readers that both workers (both zygotes) are checked
    assert {r["stdout"] for r in run_batch(http, [reader] * 6)} == {"[]\n"}
    assert not os.path.exists("/tmp/cj-persist-probe") and not os.path.exists(w["stdout"].strip())


def test_wall_clock_timeout_catches_sleeping_code(http):
    r = run_code(http, "import time\nprint('before', flush=True)\ntime.sleep(60)")
    assert r["reason"] == "worker_timeout" and r["run_success"] is False
    assert r["stdout"] == "before\n" and "time limit" in r["stderr"]


def test_cpu_loop_times_out(http):
    r = run_code(http, "while True:\n    pass")
    assert r["reason"] == "worker_timeout" and r["run_success"] is False


def test_memory_limit(http):
    r = run_code(http, "x = bytearray(2 * 1024 ** 3)\nprint('allocated')")
    assert r["run_success"] is False and "MemoryError" in r["stderr"]
    assert run_code(http, "x = bytearray(64 * 1024 ** 2); print(len(x))")["stdout"] == f"{64 * 1024 ** 2}\n"


def test_fork_bomb_is_contained(http, isolation):
    code = """
import os
n = 0
while n < 100000:
    try:
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "302"])
        n += 1
    except OSError:
        break
print("forked", n)
"""
    r = run_code(http, code)
    assert r["run_success"] and r["stdout"].startswith("forked ")
    assert int(r["stdout"].split()[1]) < JudgeConfig().max_processes  # RLIMIT_NPROC stopped it
    assert leftover_sleepers() == []
    assert run_code(http, "print('still fine')")["stdout"] == "still fine\n"


def test_stdout_flood_is_truncated_and_bounded(http):
    r = run_code(http, "while True:\n    print('x' * 1000)")
    assert r["run_success"] is False
    assert len(r["stdout"]) == 1000 and set(r["stdout"]) <= {"x", "\n"}
    assert run_code(http, "print('ok')")["stdout"] == "ok\n"


def test_open_files_limited(http):
    code = "fs = []\ntry:\n    while True: fs.append(open('/dev/null'))\nexcept OSError as e:\n    print(len(fs), e.errno)"
    r = run_code(http, code)
    n, errno_ = map(int, r["stdout"].split())
    assert n < JudgeConfig().max_open_files and errno_ == 24  # EMFILE


def test_sandbox_none_says_so():
    ex = Executor(JudgeConfig(sandbox="none", preload_modules="math"))
    try:
        iso = ex.start()
        assert iso["level"] == "rlimits-only" and iso["warnings"]
        r = ex.run({"type": "python", "solution": "print(2 + 2)", "input": None, "expected_output": None})
        assert r["stdout"] == "4\n" and r["exit_code"] == 0
    finally:
        ex.stop()


def test_job_faking_its_exit_status_is_still_ended(http, isolation):
    """A job may write to the status pipe it inherits; it then gets its answer early but is killed at once."""
    r = run_code(http, "import os\nos.write(4, b'0')\nos.execvp('sleep', ['sleep', '303'])")
    assert r["reason"] == ""
    assert leftover_sleepers() == []
    assert run_code(http, "print('next')")["stdout"] == "next\n"
