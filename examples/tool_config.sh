#!/usr/bin/env bash
# Where the rollouts find the code judge (sourced by the example scripts, before preflight.sh).
#
# resolve_code_judge: reads NNODES, TOOL_CONFIG, CODE_JUDGE_URL and GENERATED_TOOL_CONFIG; sets CODE_JUDGE_URL
# and TOOL_CONFIG for the launch.
#   - CODE_JUDGE_URL unset, one node: the tool yaml's own host_addr/host_port (localhost:8088 by default).
#   - CODE_JUDGE_URL set: a copy of TOOL_CONFIG with `url: CODE_JUDGE_URL` is written to GENERATED_TOOL_CONFIG
#     and used instead, so the ping check and the tool reach the same judge. With several nodes that path must
#     be readable on every node (a shared filesystem, like MODEL_PATH): the rollout workers read it there.
#   - NNODES > 1 without CODE_JUDGE_URL, or with a localhost one: an error, since "localhost" is a different
#     machine on every node.
resolve_code_judge() {
    if [[ -z "${CODE_JUDGE_URL:-}" ]]; then
        if (( NNODES > 1 )); then
            echo "error: NNODES=$NNODES needs CODE_JUDGE_URL=http://<judge address>:<port>, the code judge's" \
                 "address on the cluster's private network: the tool yaml's localhost is a different machine" \
                 "on every node (see examples/README.md, \"The code judge\")" >&2
            return 1
        fi
        CODE_JUDGE_URL=http://localhost:8088  # host_addr/host_port of the default TOOL_CONFIG
        return 0
    fi
    if (( NNODES > 1 )) && [[ "$CODE_JUDGE_URL" =~ ^[a-zA-Z]+://(localhost|127\.[0-9.]+|\[::1\])(:|/|$) ]]; then
        echo "error: NNODES=$NNODES but CODE_JUDGE_URL=$CODE_JUDGE_URL is reachable from this machine only: use" \
             "the code judge's address on the cluster's private network" >&2
        return 1
    fi
    write_tool_config "$TOOL_CONFIG" "$CODE_JUDGE_URL" "$GENERATED_TOOL_CONFIG"
    TOOL_CONFIG=$GENERATED_TOOL_CONFIG
}

# write_tool_config SRC URL DEST: DEST is the verl tool yaml SRC with `url: "URL"` in every tool's `config:`
# block (the tool reads `url` before host_addr/host_port; see rstar2_agent/tools/verl_tools.py), and any `url:`
# line SRC had there dropped. Plain awk (mawk or gawk), no Python needed.
write_tool_config() {
    local src=$1 url=$2 dest=$3
    [[ -f "$src" ]] || { echo "error: tool config $src not found" >&2; return 1; }
    [[ "$url" =~ ^https?://[^[:space:]\"]+$ ]] || {
        echo "error: CODE_JUDGE_URL='$url' is not an http(s)://host:port URL" >&2; return 1; }
    mkdir -p "$(dirname "$dest")"
    {
        echo "# generated from $src with url: $url (examples/tool_config.sh); edit the source, not this file"
        awk -v url="$url" '
            in_config && match($0, /^[[:space:]]*/) && RLENGTH <= config_indent && $0 !~ /^[[:space:]]*(#|$)/ {
                in_config = 0                                      # left the config: block
            }
            in_config && /^[[:space:]]+url:/ { next }              # the source url, replaced below
            { print }
            /^[[:space:]]*config:[[:space:]]*$/ {
                match($0, /^[[:space:]]*/); config_indent = RLENGTH; in_config = 1
                printf "%s  url: \"%s\"\n", substr($0, 1, RLENGTH), url
            }
        ' "$src"
    } > "$dest"
}
