"""Run an eval: every (problem, sample) pair not yet in the output, at most `concurrency` at a time.

Each pair is one `AgentLoop.run` with request id `eval-<problem index>-<sample>` (the in-process transformers
generator seeds its sampler from it, so a resumed pair draws what it would have drawn), scored as training
scores it, and appended to `trajectories.jsonl` the moment it is done. The first error that is not the
model's (the server refused, answered 5xx or timed out past its retries) cancels the pairs in flight and is
raised as `EvalInterrupted`, which says how many are safely on disk; the pairs finished before it stay there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from typing import Any, Callable, Optional, Sequence

from rstar2_agent.eval.agent import Agent, turns_of
from rstar2_agent.eval.data import EvalItem
from rstar2_agent.eval.metrics import summarize
from rstar2_agent.eval.output import RunFolder, records_for

__all__ = ["EvalInterrupted", "SamplingSettings", "evaluate", "trajectory_record"]


class EvalInterrupted(RuntimeError):
    """Generation failed; `done` pairs of `total` are in the output (a rerun resumes)."""

    def __init__(self, message: str, done: int, total: int, cause: BaseException):
        super().__init__(message)
        self.done, self.total, self.cause = done, total, cause


@dataclasses.dataclass
class SamplingSettings:
    n: int = 16
    temperature: float = 0.6
    top_p: float = 0.95
    concurrency: int = 32

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p}


def trajectory_record(item: EvalItem, sample: int, traj, agent: Agent, prompt_ids: Sequence[int],
                      calls: list[dict], score: float, answer: Optional[str], seconds: float) -> dict:
    s = traj.stats
    return {
        "problem_index": item.index, "sample": sample, "data_source": item.data_source,
        "problem": item.problem, "ground_truth": item.answer,
        "prompt": agent.tokenizer.decode(list(prompt_ids), skip_special_tokens=False),
        "turns": turns_of(agent.tokenizer, traj), "tool_call_log": calls,
        "answer": answer, "score": score,
        "finish_reason": s.finish_reason, "assistant_turns": s.assistant_turns, "tool_calls": s.tool_calls,
        "tool_errors": s.tool_errors, "parse_errors": s.parse_errors, "infra_error": traj.infra_error,
        "prompt_length": len(prompt_ids), "response_length": len(traj.response_ids),
        "model_tokens": sum(traj.response_mask), "generation_s": round(s.generation_s, 3),
        "tool_s": round(s.tool_latency_s, 3), "seconds": round(seconds, 3),
    }


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    live = sys.stderr.isatty()
    return tqdm(total=total, desc="eval", disable=not enabled, dynamic_ncols=True, mininterval=0.2 if live else 10.0,
                leave=False)


async def evaluate(items: Sequence[EvalItem], generate: Callable, agent: Agent, sampling: SamplingSettings,
                   folder: RunFolder, score_pool, progress: bool = True, log: Callable[[str], None] = print,
                   tag: str = "eval") -> dict:
    """Run the missing pairs into `folder`; the report over every finished pair (`metrics.summarize`)."""
    from rstar2_agent.reward import extract_model_answer

    done = folder.finished(items, sampling.n)
    todo = [(item, k) for item in items for k in range(sampling.n) if (item.index, k) not in done]
    total = len(items) * sampling.n
    if done:
        log(f"resuming: {len(done)} of {total} trajectories already in {folder.trajectories}, {len(todo)} to run")
    correct = [sum(float(r["score"]) for r in done.values()), len(done)]
    prompts: dict[int, list[int]] = {}
    sem = asyncio.Semaphore(max(1, sampling.concurrency))
    bar = _bar(len(todo), progress)
    params = sampling.params()
    written = [0]

    async def one(item: EvalItem, k: int) -> None:
        async with sem:
            if item.index not in prompts:
                prompts[item.index] = await asyncio.to_thread(agent.prompt_ids, item.problem)
            ids = prompts[item.index]
            calls: list[dict] = []
            start = time.perf_counter()
            traj = await agent.loop(calls.append).run(ids, generate, params, request_id=f"{tag}-{item.index}-{k}")
        text = await asyncio.to_thread(agent.model_text, traj)
        if traj.infra_error:
            score = 0.0
        else:
            score = float(await asyncio.wrap_future(score_pool.submit(text, item.answer)))
        record = trajectory_record(item, k, traj, agent, ids, calls, score, extract_model_answer(text),
                                   time.perf_counter() - start)
        folder.append(record)
        written[0] += 1
        if not traj.infra_error:
            correct[0] += score
            correct[1] += 1
        bar.update(1)
        bar.set_postfix(acc=f"{correct[0] / max(correct[1], 1):.3f}", refresh=False)

    tasks = [asyncio.create_task(one(item, k)) for item, k in todo]
    try:
        if tasks:
            finished, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in finished if not t.cancelled() and t.exception() is not None]
            if failed:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                exc = failed[0].exception()
                have = len(done) + written[0]
                raise EvalInterrupted(f"{type(exc).__name__}: {exc}", have, total, exc) from exc
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        raise
    finally:
        bar.close()
    from rstar2_agent.eval.output import read_records

    return summarize(records_for(read_records(folder.trajectories), items, sampling.n), sampling.n)
