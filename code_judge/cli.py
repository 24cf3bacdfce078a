"""Command line of the code judge: `serve` (API only), `workers` (workers only), `up` (all on one machine).

Available as `rstar2-agent judge ...` and `python -m code_judge ...`. Settings come from the public
code-judge's environment variables (REDIS_URI, MAX_EXECUTION_TIME, MAX_MEMORY, MAX_WORKERS, ...); the flags
below override them. `workers` defaults to SANDBOX=strict (it refuses to start unless every isolation layer
is available); `up`, `demo` and `LocalJudge` keep SANDBOX=auto.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from code_judge.config import ConfigError, JudgeConfig


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API (needs REDIS_URI)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 to expose)")
    serve.add_argument("--port", type=int, default=8088)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--redis-uri", help="overrides REDIS_URI")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    workers = sub.add_parser("workers", help="run worker processes on this machine (needs REDIS_URI)")
    workers.add_argument("--max-workers", type=int, help="number of workers (default MAX_WORKERS or CPU count)")
    workers.add_argument("--sandbox", choices=("auto", "strict", "none"),
                         help="default SANDBOX, else strict: refuse to start unless every isolation layer is on")
    workers.add_argument("--redis-uri", help="overrides REDIS_URI")
    workers.set_defaults(func=cmd_workers)

    up = sub.add_parser("up", help="private redis-server + workers + API on this machine; Ctrl-C stops all")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8088)
    up.add_argument("--max-workers", type=int, help="number of workers (default MAX_WORKERS or CPU count)")
    up.add_argument("--redis-uri", help="use this Redis instead of starting a private one")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="start a private code judge, run a few submissions, show isolation, stop")
    demo.add_argument("--max-workers", type=int, default=2)
    demo.set_defaults(func=cmd_demo)


def _config(args, sandbox_default: str = "") -> JudgeConfig:
    overrides = {}
    sandbox = getattr(args, "sandbox", None) or os.environ.get("SANDBOX") or sandbox_default
    if sandbox:
        overrides["sandbox"] = sandbox
    if getattr(args, "redis_uri", None):
        overrides["redis_uri"] = args.redis_uri
    if getattr(args, "max_workers", None):
        overrides["max_workers"] = args.max_workers
    return JudgeConfig.from_env(**overrides)


def cmd_serve(args) -> None:
    import uvicorn

    cfg = _config(args)
    os.environ["REDIS_URI"] = cfg.require_redis()  # uvicorn workers build the app from the environment
    uvicorn.run("code_judge.api.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level)


def cmd_workers(args) -> None:
    from code_judge.worker.manager import WorkerManager

    cfg = _config(args, sandbox_default="strict")  # a bare `judge workers` never runs code weakly isolated
    cfg.require_redis()
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ["SANDBOX"] = cfg.sandbox  # the worker processes read it
    if not WorkerManager(cfg).run():
        sys.exit(f"error: the sandbox refused to start (SANDBOX={cfg.sandbox}); the reason is logged above")


def _stop_on_signal() -> threading.Event:
    """An event set by SIGINT/SIGTERM; installed before anything tells the user how to stop us."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _wait(stop: threading.Event) -> None:
    while not stop.is_set():
        stop.wait(1.0)


def cmd_up(args) -> None:
    from code_judge.local import LocalJudge

    cfg = _config(args)
    judge = LocalJudge(workers=cfg.max_workers, port=args.port, host=args.host, redis_uri=args.redis_uri)
    try:
        status = judge.start().wait_ready()
        stop = _stop_on_signal()
        iso = status.get("isolation") or {}
        print(f"code judge up at {judge.url}  (redis {judge.redis_uri}, {cfg.max_workers} workers, "
              f"isolation: {iso.get('level')})", flush=True)
        for warning in iso.get("warnings", []):
            print(f"WARNING: {warning}", flush=True)
        preload_warning = describe_preload_failures(status.get("preload") or {})
        if preload_warning:
            print(preload_warning, file=sys.stderr, flush=True)
        print("Ctrl-C to stop", flush=True)
        _wait(stop)
    finally:
        print("stopping code judge ...", flush=True)
        judge.stop()


def describe_preload_failures(preload: dict) -> str:
    """A loud multi-line WARNING naming every preload module a zygote tier lacks, and why; "" if none."""
    lines = []
    for k, tier in enumerate(preload.get("tiers") or []):
        for name, reason in (tier.get("failed") or {}).items():
            lines.append(f"  tier {k}: {name}: {reason}")
        if tier.get("warmup_error"):
            lines.append(f"  tier {k}: PRELOAD_WARMUP failed: {tier['warmup_error']}")
    if not lines:
        return ""
    bar = "!" * 78
    return "\n".join([
        bar,
        "WARNING: configured preload modules are NOT available in the code judge's workers:",
        *lines,
        "Jobs that import them fail (or run cold). Install them into the Python that runs the judge,",
        "or remove them from PRELOAD_MODULES / PRELOAD_TIERS. GET /status/detail shows the live tiers.",
        bar,
    ])


DEMO_PROGRAMS = [
    ("arithmetic", "print(1 + 1)", None),
    ("stdin", "n = int(input()); print(sum(range(n + 1)))", "100"),
    ("sympy", "import sympy as sp; x = sp.symbols('x'); print(sp.solve(x**2 - 5*x + 6, x))", None),
    ("network blocked", "import socket; socket.create_connection(('127.0.0.1', 80), timeout=2)", None),
    ("timeout", "while True: pass", None),
]


def cmd_demo(args) -> None:
    import httpx

    from code_judge.local import LocalJudge

    with LocalJudge(workers=args.max_workers, env={"MAX_EXECUTION_TIME": "2", "LOG_LEVEL": "WARNING"}) as judge:
        status = httpx.get(judge.url + "/status/detail").json()
        print(f"code judge at {judge.url}; isolation: {status['isolation']}")
        batch = {"type": "batch", "submissions": [
            {"type": "python", "solution": code, "input": stdin} for _, code, stdin in DEMO_PROGRAMS]}
        results = httpx.post(judge.url + "/run/long-batch", json=batch, timeout=120).json()["results"]
        for (name, _, _), r in zip(DEMO_PROGRAMS, results):
            tail = (r["stdout"] or r["stderr"]).strip().splitlines()
            print(f"  {name:16s} run_success={r['run_success']!s:5s} reason={r['reason'] or '-':15s} "
                  f"cost={r['cost']:.3f}s  {tail[-1] if tail else ''}")
        expected = [True, True, True, False, False]
        if [r["run_success"] for r in results] != expected:
            sys.exit("demo: unexpected results")
    print("demo: ok")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="code_judge", description=__doc__.splitlines()[0])
    add_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
