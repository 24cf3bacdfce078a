#!/usr/bin/env bash
# Shared start-up checks of the example scripts (sourced, with CODE_JUDGE_URL set):
# - many concurrent trajectories each hold HTTP connections to the code judge and SGLang: raise the
#   open-file limit to 65535 (or as far as the hard limit allows, with a warning);
# - refuse to start when no code judge answers at $CODE_JUDGE_URL/ping (SKIP_JUDGE_CHECK=1 skips this).
if ! ulimit -n 65535 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    echo "warning: could not raise the open-file limit to 65535; using the hard limit $(ulimit -n)" >&2
fi

if [[ "${SKIP_JUDGE_CHECK:-0}" != 1 ]]; then
    if ! curl -fsS --max-time 5 "$CODE_JUDGE_URL/ping" >/dev/null; then
        echo "error: no code judge answers at $CODE_JUDGE_URL/ping; start it first" \
             "(rstar2-agent judge up --port 8088), or set CODE_JUDGE_URL, or SKIP_JUDGE_CHECK=1" >&2
        exit 1
    fi
fi
