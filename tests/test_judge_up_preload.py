"""`judge up` warns loudly on stderr when a configured preload tier is not available, and says why."""

import os
import signal
import subprocess
import sys
import tempfile

from code_judge.cli import describe_preload_failures
from code_judge.local import free_port
from conftest import read_banner


def test_describe_preload_failures_names_modules_and_reasons():
    assert describe_preload_failures({}) == ""
    ok = {"tiers": [{"modules": ["math"], "loaded": ["math"], "failed": {}, "warmup_error": None}]}
    assert describe_preload_failures(ok) == ""
    bad = {"tiers": [ok["tiers"][0], {"modules": ["math", "nope"], "loaded": ["math"],
                                      "failed": {"nope": "ModuleNotFoundError: No module named 'nope'"},
                                      "warmup_error": "NameError: name 'sp' is not defined"}]}
    text = describe_preload_failures(bad)
    assert len(text.splitlines()) >= 5 and "WARNING" in text
    assert "tier 1: nope: ModuleNotFoundError: No module named 'nope'" in text
    assert "tier 1: PRELOAD_WARMUP failed: NameError" in text


def test_judge_up_warns_about_an_unavailable_preload_tier():
    port = free_port()
    env = dict(os.environ, PRELOAD_TIERS="numpy;cj_no_such_module_xyz", PRELOAD_WARMUP="")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "code_judge", "up", "--port", str(port), "--max-workers", "1"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )
        try:
            banner = read_banner(proc, "Ctrl-C to stop")
            assert f"code judge up at http://127.0.0.1:{port}" in banner, banner
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    assert "WARNING: configured preload modules are NOT available" in stderr, stderr[-3000:]
    assert "tier 2: cj_no_such_module_xyz: ModuleNotFoundError: No module named 'cj_no_such_module_xyz'" in stderr
    assert "numpy:" not in stderr.split("NOT available", 1)[1].split("Jobs that import", 1)[0]
