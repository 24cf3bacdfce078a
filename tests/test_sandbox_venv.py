"""A judge whose Python lives under /tmp (a venv there) still gives jobs every package it has.

The sandbox covers /tmp with a private tmpfs; it must bind the interpreter, its prefixes and every import
path found there back in (read-only), or jobs would lose numpy, sympy and whatever the venv holds.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOB = """
import json, os, sys
import numpy, sympy, cj_tmp_probe
x = sympy.symbols("x")
mounts = [line.split() for line in open("/proc/self/mountinfo")]
probe_dir = os.path.dirname(cj_tmp_probe.__file__)
here = max((m for m in mounts if probe_dir == m[4] or probe_dir.startswith(m[4].rstrip("/") + "/")),
           key=lambda m: len(m[4]))
print(json.dumps({
    "executable": sys.executable, "prefix": sys.prefix, "probe": cj_tmp_probe.__file__,
    "answer": cj_tmp_probe.ANSWER, "numpy": int(numpy.arange(5).sum()),
    "sympy": [int(r) for r in sympy.solve(x**2 - 5*x + 6, x)],
    "probe_mount": here[4], "probe_mount_options": here[5].split(","),
}))
"""

DRIVER = """
import json, sys
import httpx
from code_judge.local import LocalJudge

job = sys.stdin.read()
with LocalJudge(workers=1, env={"MAX_EXECUTION_TIME": "10", "PRELOAD_WARMUP": ""}) as judge:
    detail = httpx.get(judge.url + "/status/detail").json()
    result = httpx.post(judge.url + "/run", json={"type": "python", "solution": job}, timeout=120).json()
print("RESULT " + json.dumps({"detail": detail, "result": result}))
"""


@pytest.fixture(scope="module")
def tmp_venv():
    root = tempfile.mkdtemp(prefix="cj-venv-", dir="/tmp")  # mode 0700, as mkdtemp makes it
    venv = os.path.join(root, "venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--copies", "--without-pip", venv],
                   check=True, timeout=300)
    python = os.path.join(venv, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    pkg = os.path.join(site, "cj_tmp_probe")
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write("ANSWER = 42\n")
    yield root, python
    shutil.rmtree(root, ignore_errors=True)


def test_venv_really_lives_under_tmp(tmp_venv):
    root, python = tmp_venv
    out = subprocess.run([python, "-c", "import sys, os, cj_tmp_probe, numpy, sympy; "
                          "print(os.path.realpath(sys.executable)); print(sys.prefix); print(cj_tmp_probe.__file__)"],
                         check=True, capture_output=True, text=True).stdout.split()
    assert all(p.startswith(root + "/") for p in out), out
    assert sysconfig.get_paths()["purelib"] != out[2]


def test_jobs_of_a_judge_run_from_a_venv_under_tmp_import_its_packages(tmp_venv):
    root, python = tmp_venv
    proc = subprocess.run([python, "-c", DRIVER], input=textwrap.dedent(JOB), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    answer = json.loads(line[len("RESULT "):])
    result, detail = answer["result"], answer["detail"]
    assert result["run_success"] is True, result
    job = json.loads(result["stdout"])
    assert job["executable"].startswith(root + "/") and job["prefix"].startswith(root + "/")
    assert job["probe"].startswith(root + "/")
    assert (job["answer"], job["numpy"], job["sympy"]) == (42, 10, [2, 3])
    assert "not available" not in proc.stderr, proc.stderr[-4000:]
    assert detail["preload"]["workers_with_failures"] == 0, detail["preload"]
    assert "numpy" in detail["preload"]["tiers"][1]["loaded"] and "sympy" in detail["preload"]["tiers"][2]["loaded"]
    if os.geteuid() == 0:
        # Here (root, namespaces allowed) /tmp is a private tmpfs in the sandbox: the venv was bound back in,
        # read-only.
        assert detail["isolation"]["level"] == "full" and detail["isolation"]["mount"], detail["isolation"]
        assert job["probe_mount"].startswith(root + "/") and "ro" in job["probe_mount_options"], job
