#!/usr/bin/env python3
"""Overhead of the agent loop itself: trajectories/s, per-turn cost beyond generation and tool time, memory.

Two runs, both with an instant scripted generator (every trajectory: 3 model turns, 2 tool calls):

* **loop only**: an instant in-process tool, so all time is the loop's own (parsing, tool-turn rendering and
  tokenising, bookkeeping); reported as microseconds per turn. Target: under 1 ms per turn.
* **with the code judge**: the real `PythonTool` through `CodeJudgeClient` against a local code judge
  (`LocalJudge`), many trajectories concurrently; reported as trajectories/s and tool-call latency.

Memory: RSS of this process sampled after each tenth of the `--trajectories` (default 10,000) loop-only
trajectories and of the `--judge-trajectories` (default 2,000) ones through the client; target: flat (growth
under 5% between the first and the last tenth), i.e. no leak in the loop or the client.

    python3 benchmarks/agent_loop_overhead.py [--trajectories 10000] [--judge-trajectories 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from code_judge.client import CodeJudgeClient  # noqa: E402
from code_judge.local import LocalJudge  # noqa: E402
from rstar2_agent.rollout import AgentLoop, Generation, LoopConfig, ToolTurnFormat, render  # noqa: E402
from rstar2_agent.tools import PythonTool, ToolResult  # noqa: E402
from recorded import default_path, recorded  # noqa: E402  (benchmarks/, the script's own folder)
from rstar2_agent.engine.tiny import build_tokenizer  # noqa: E402

TOK = build_tokenizer()


def tool_call(code: str) -> str:
    args = {"code": code, "input": ""}
    return "<tool_call>\n" + json.dumps({"name": "python_code_with_standard_io", "arguments": args}) + "\n</tool_call>"


TURNS = [
    TOK.encode("Let me compute the sum first.\n" + tool_call("print(sum(range(101)))"), add_special_tokens=False),
    TOK.encode("Now the product.\n" + tool_call("import math\nprint(math.prod(range(1, 6)))"), add_special_tokens=False),
    TOK.encode("So the answer is \\boxed{5170}. </reason> <answer>\\boxed{5170}</answer>", add_special_tokens=False),
]


async def instant_generate(request_id, token_ids, params):
    """Answers at once with the next scripted turn of this request (tracked by request id)."""
    turn = instant_generate.turn_of.setdefault(request_id, 0)
    instant_generate.turn_of[request_id] = turn + 1
    ids = TURNS[min(turn, 2)] + [TOK.eos_token_id]
    if turn >= 2:
        instant_generate.turn_of.pop(request_id, None)
    return Generation(token_ids=ids)


instant_generate.turn_of = {}


class InstantTool:
    name = "python_code_with_standard_io"
    schema = {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}

    async def execute(self, arguments, history=()):
        return ToolResult(text="Tool call success\nstdout: 5050\nexecution time: 0.00s", success=True)


def make_loop(tool) -> AgentLoop:
    return AgentLoop(TOK, {tool.name: tool}, LoopConfig(response_length=4096), ToolTurnFormat(TOK, TOK.chat_template))


PROMPT = TOK.encode(render(TOK, [{"role": "user", "content": "Sum 1..100 plus 5!?"}], TOK.chat_template,
                           tools=[InstantTool.schema], add_generation_prompt=True), add_special_tokens=False)


async def run_batch(loop: AgentLoop, n: int, concurrency: int) -> list:
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            return await loop.run(PROMPT, instant_generate, {"temperature": 1.0}, request_id=f"r{i}-{time.time_ns()}")

    return await asyncio.gather(*(one(i) for i in range(n)))


async def loop_only(total: int) -> dict:
    loop = make_loop(InstantTool())
    proc = psutil.Process()
    await run_batch(loop, 200, 64)  # warm-up
    gc.collect()
    rss, turns, start = [], 0, time.perf_counter()
    batch = max(1, total // 10)
    for _ in range(10):
        trajs = await run_batch(loop, batch, 64)
        turns += sum(t.stats.assistant_turns for t in trajs)
        assert all(t.stats.tool_calls == 2 and t.stats.finish_reason == "stop" for t in trajs)
        gc.collect()
        rss.append(proc.memory_info().rss / 2**20)
    elapsed = time.perf_counter() - start
    return {"trajectories": batch * 10, "turns": turns, "elapsed_s": elapsed, "us_per_turn": elapsed / turns * 1e6,
            "traj_per_s": batch * 10 / elapsed, "rss_first_mb": rss[0], "rss_last_mb": rss[-1],
            "rss_growth": (rss[-1] - rss[0]) / rss[0]}


async def with_judge(url: str, total: int, concurrency: int) -> dict:
    proc = psutil.Process()
    rss, trajs = [], []
    async with CodeJudgeClient(url, max_concurrency=8, max_batch_size=64) as client:
        loop = make_loop(PythonTool(client))
        await run_batch(loop, 20, 20)
        start = time.perf_counter()
        for _ in range(10):
            trajs += await run_batch(loop, max(1, total // 10), concurrency)
            gc.collect()
            rss.append(proc.memory_info().rss / 2**20)
        elapsed = time.perf_counter() - start
    total = len(trajs)
    errors = sum(t.stats.tool_errors for t in trajs)
    tool_s = sum(t.stats.tool_latency_s for t in trajs) / max(1, sum(t.stats.tool_calls for t in trajs))
    ok = sum("stdout: 5050" in TOK.decode(t.response_ids) for t in trajs)
    return {"trajectories": total, "elapsed_s": elapsed, "traj_per_s": total / elapsed, "tool_errors": errors,
            "mean_tool_call_ms": tool_s * 1e3, "correct_tool_output": ok, "rss_first_mb": rss[0],
            "rss_last_mb": rss[-1], "rss_growth": (rss[-1] - rss[0]) / rss[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=10000)
    ap.add_argument("--judge-trajectories", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--results", default=default_path(__file__), help="also write the output here ('': no)")
    args = ap.parse_args()
    with recorded(args.results):
        run(args)


def run(args) -> None:
    lo = asyncio.run(loop_only(args.trajectories))
    with LocalJudge(workers=os.cpu_count() or 2, env={"LOG_LEVEL": "WARNING"}) as judge:
        wj = asyncio.run(with_judge(judge.url, args.judge_trajectories, args.concurrency))

    print(f"{'run':22s} {'trajectories':>12s} {'traj/s':>9s} {'per turn':>12s} {'tool call':>10s} {'errors':>7s}")
    print(f"{'loop only':22s} {lo['trajectories']:12d} {lo['traj_per_s']:9.1f} {lo['us_per_turn']:9.0f} us "
          f"{'-':>10s} {0:7d}")
    print(f"{'with code judge':22s} {wj['trajectories']:12d} {wj['traj_per_s']:9.1f} {'-':>12s} "
          f"{wj['mean_tool_call_ms']:7.1f} ms {wj['tool_errors']:7d}")
    for name, r in (("loop only", lo), ("with code judge (loop + client)", wj)):
        print(f"memory, {name}, over {r['trajectories']} trajectories: RSS {r['rss_first_mb']:.1f} MB -> "
              f"{r['rss_last_mb']:.1f} MB ({r['rss_growth'] * 100:+.1f}%)")
    print(f"trajectories with the correct tool output from the judge: {wj['correct_tool_output']}/{wj['trajectories']}")
    overhead_ok = lo["us_per_turn"] < 1000
    memory_ok = lo["rss_growth"] < 0.05 and wj["rss_growth"] < 0.05
    print(f"targets: loop overhead < 1 ms/turn: {'MET' if overhead_ok else 'NOT MET'}; "
          f"memory flat (< 5% growth): {'MET' if memory_ok else 'NOT MET'}")
    if wj["tool_errors"] or wj["correct_tool_output"] != wj["trajectories"]:
        sys.exit("errors in the judge run")


if __name__ == "__main__":
    main()
