"""The sandbox never runs code half-built: what it cannot make safe, it refuses, with a reason and a remedy."""

import ctypes
import multiprocessing as mp
import os
import subprocess
import sys
import time

import redis

from code_judge.worker import sandbox

CAP_SYS_ADMIN, PR_CAPBSET_DROP = 21, 24


def _mounts_with_path(path: str, queue) -> None:
    sys.path.append(path)
    try:
        sandbox._private_mounts(tmpfs_mb=4)
        queue.put("mounted")
    except sandbox.SandboxError as exc:
        queue.put(f"SandboxError: {exc}")
    except OSError as exc:
        queue.put(f"OSError: {exc}")


def test_a_python_path_that_is_a_private_dir_is_refused():
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_mounts_with_path, args=("/tmp", queue))
    proc.start()
    answer = queue.get(timeout=60)
    proc.join(60)
    if os.geteuid() == 0:  # root may build mount namespaces: the check itself must refuse
        assert answer.startswith("SandboxError: a Python path is a directory the sandbox makes private: /tmp"), answer
        assert "SANDBOX=none" in answer and "outside /tmp" in answer and "not as one of them" in answer
    else:  # without privileges no mount is made at all, and auto mode reports that layer as missing
        assert answer.startswith("OSError"), answer


def drop_sys_admin() -> None:
    """Like a container without CAP_SYS_ADMIN: the kernel refuses namespaces (best effort for non-root)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0)


def _workers(redis_uri: str, prefix: str, *args: str, **env) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k != "SANDBOX"}
    environ.update(REDIS_URI=redis_uri, REDIS_KEY_PREFIX=prefix, PRELOAD_TIERS="", PRELOAD_WARMUP="", **env)
    return subprocess.Popen([sys.executable, "-m", "code_judge", "workers", "--max-workers", "1", *args],
                            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=drop_sys_admin)


def test_judge_workers_defaults_to_strict_and_fails_clearly_without_namespaces(redis_server):
    proc = _workers(redis_server.uri, "strict-test")
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, None), err
    assert "SANDBOX=strict but" in err and "no mount isolation" in err, err
    assert "set SANDBOX=auto" in err and "error: the sandbox refused to start (SANDBOX=strict)" in err, err
    assert err.count("died with") == 0  # stopped at once, not respawned in a loop


def test_judge_workers_sandbox_auto_still_starts_without_namespaces(redis_server):
    proc = _workers(redis_server.uri, "auto-test", "--sandbox", "auto")
    client = redis.Redis.from_url(redis_server.uri)
    try:
        deadline = time.monotonic() + 120
        while not client.smembers("auto-test:rstar2cj:workers") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert client.smembers("auto-test:rstar2cj:workers")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "no mount isolation" in err and "SANDBOX=strict" not in err, err
