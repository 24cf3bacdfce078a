"""`rstar2-agent eval`: evaluate a served model (or a model folder) with the training-time agent loop, tools,
chat template, code judge and reward.

    rstar2-agent eval --data bundled --base-url http://127.0.0.1:8000 --model Qwen/Qwen3-14B --tokenizer DIR
    rstar2-agent eval --data ~/data/rstar2-agent/aime2024/test.parquet --base-url URL --model /models/ckpt --n 16
    rstar2-agent eval --data bundled --model-dir ~/models/smollm2-rstar2 --n 4 --system-prompt cpu

Data: `bundled` (the bundled dev split; `bundled:holdout`), a verl parquet from data_preprocess/, or
question/answer json/jsonl. Generation: `--base-url` (any OpenAI-compatible `/v1/completions`: vLLM, SGLang,
`python3 -m rstar2_agent.eval.server`) with `--model` (default: the server's first) and the model's tokenizer
(`--tokenizer`, default `--model` when that is a folder); or `--model-dir`, in this process (vLLM's CPU build
where it imports and takes the model, else transformers). The code judge: `--judge-url`, or a private one.

Writes `<output>/trajectories.jsonl` (every trajectory: prompt, turns, tool calls and outputs, answer, score)
as it goes and `<output>/summary.json`, prints a table per data source (avg@n, pass@n, maj@n, tool calls,
tool-error ratio, response length, finish reasons). Rerun the same command to resume an interrupted eval.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional

__all__ = ["add_command", "run", "default_output"]


def add_command(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a served model or a model folder (avg@n, pass@n, maj@n)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="bundled[:split], a verl parquet, or question/answer json(l)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    g = p.add_argument_group("model")
    g.add_argument("--base-url", default=None, help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    g.add_argument("--model", default=None, help="the served model's name (default: the server's first)")
    g.add_argument("--tokenizer", default=None, help="the served model's tokenizer folder (default: --model)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token (env OPENAI_API_KEY)")
    g.add_argument("--model-dir", default=None, help="a Hugging Face model folder, run in this process")
    g.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"],
                   help="with --model-dir: vLLM where it runs (auto), transformers (hf), or insist on vLLM")
    s = p.add_argument_group("sampling and the agent loop")
    s.add_argument("--n", type=int, default=16, help="samples per problem")
    s.add_argument("--temperature", type=float, default=0.6)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--max-tokens", type=int, default=8192, help="response budget of a trajectory, tool turns included")
    s.add_argument("--max-turns", type=int, default=5, help="assistant turns per trajectory")
    s.add_argument("--max-tool-response-length", type=int, default=256, help="characters of a tool output shown")
    s.add_argument("--system-prompt", default="template",
                   help="template (the chat template lists the tool; the GPU recipe), cpu (the CPU engine's "
                        "system prompt), or the text of one")
    s.add_argument("--chat-template", default=None, help="a jinja file (default: rstar2_agent/config's)")
    s.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("running")
    r.add_argument("--concurrency", type=int, default=32, help="trajectories in flight")
    r.add_argument("--output", default=None, help="output folder (default: eval_outputs/<data>.<model>)")
    r.add_argument("--judge-url", default=None, help="a running code judge (default: start a private one)")
    r.add_argument("--judge-workers", type=int, default=2, help="workers of the private judge")
    r.add_argument("--reward-workers", type=int, default=1, help="processes scoring answers")
    r.add_argument("--request-timeout", type=float, default=600.0, help="seconds for one completion request")
    r.add_argument("--max-retries", type=int, default=4, help="retries of a request on errors/5xx/timeouts")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def default_output(data: str, model: Optional[str]) -> Path:
    """eval_outputs/<data name>.<model name> (stable, so a rerun resumes)."""
    data_name = data.replace(":", "-") if data.startswith("bundled") else Path(data).stem
    return Path("eval_outputs") / f"{_slug(data_name)}.{_slug(Path(model.rstrip('/')).name if model else 'served')}"


def _check(args) -> None:
    if bool(args.base_url) == bool(args.model_dir):
        sys.exit("error: give either --base-url URL (a served model) or --model-dir DIR (in this process)")
    if args.n < 1 or args.max_tokens < 1 or args.max_turns < 1 or args.concurrency < 1:
        sys.exit("error: --n, --max-tokens, --max-turns and --concurrency must be >= 1")
    if args.model_dir and not Path(args.model_dir).expanduser().is_dir():
        sys.exit(f"error: --model-dir {args.model_dir!r} is not a folder")


def _tokenizer_for(args):
    from transformers import AutoTokenizer

    path = args.tokenizer or args.model
    if not path or not Path(path).expanduser().is_dir():
        sys.exit("error: --base-url needs the served model's tokenizer: --tokenizer DIR (or --model DIR when the "
                 "server serves a local folder under that name); the agent loop is token-in-token-out")
    return AutoTokenizer.from_pretrained(str(Path(path).expanduser()))


def run(args) -> None:
    _check(args)
    from rstar2_agent.eval.agent import AgentSettings
    from rstar2_agent.eval.data import load_items
    from rstar2_agent.eval.output import RunFolder
    from rstar2_agent.eval.runner import SamplingSettings

    try:
        items = load_items(args.data, args.limit)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    model_name = args.model_dir or args.model
    folder = RunFolder(args.output or default_output(args.data, model_name))
    settings = AgentSettings(max_tokens=args.max_tokens, max_turns=args.max_turns,
                             max_tool_response_length=args.max_tool_response_length,
                             system_prompt=args.system_prompt, chat_template=args.chat_template)
    sampling = SamplingSettings(n=args.n, temperature=args.temperature, top_p=args.top_p,
                                concurrency=args.concurrency)
    config = {"data": args.data, "model": model_name, "base_url": args.base_url, "temperature": args.temperature,
              "top_p": args.top_p, "max_tokens": args.max_tokens, "max_turns": args.max_turns,
              "system_prompt": args.system_prompt, "n": args.n, "seed": args.seed}
    diffs = folder.check_config(config)
    try:
        folder.finished(items, args.n)  # refuses a folder that holds another data set
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if diffs:
        sys.exit(f"error: {folder.path} holds an eval with other settings ({'; '.join(diffs)}); "
                 f"use a new --output, or the same settings to resume it")
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwind: stop the judge
    judge = None
    url = args.judge_url
    if url is None:
        from code_judge.local import LocalJudge

        print(f"starting a private code judge ({args.judge_workers} workers)", file=sys.stderr)
        judge = LocalJudge(workers=args.judge_workers).start()
        url = judge.url
    started = time.perf_counter()
    try:
        report = asyncio.run(_evaluate(args, items, folder, url, settings, sampling))
    except KeyboardInterrupt:
        from rstar2_agent.eval.output import read_records, records_for

        kept = len(records_for(read_records(folder.trajectories), items, sampling.n))
        sys.exit(f"interrupted: {kept} of {len(items) * sampling.n} trajectories are finished and kept in "
                 f"{folder.trajectories}; rerun the same command to resume")
    finally:
        if judge is not None:
            judge.stop()
        signal.signal(signal.SIGTERM, previous)
    from rstar2_agent.eval.output import format_table

    report["seconds"] = round(time.perf_counter() - started, 2)
    folder.write_summary({**report, "complete": True, "config": config})
    print(format_table(report, args.n))
    print(f"trajectories: {folder.trajectories}\nsummary: {folder.summary}")


async def _evaluate(args, items, folder, judge_url: str, settings, sampling) -> dict:
    from code_judge.client import CodeJudgeClient

    from rstar2_agent.eval.agent import Agent
    from rstar2_agent.eval.clients import BackendError, CompletionsClient, local_generator
    from rstar2_agent.eval.metrics import summarize
    from rstar2_agent.eval.output import read_records, records_for
    from rstar2_agent.eval.runner import EvalInterrupted, evaluate
    from rstar2_agent.reward import RewardPool
    from rstar2_agent.tools import PythonTool

    generator = None
    async with CodeJudgeClient(judge_url) as judge:
        if not await judge.ping():
            sys.exit(f"error: no code judge answers at {judge_url}/ping")
        if args.model_dir:
            from rstar2_agent.engine.trainer import set_threads

            set_threads(0)
            max_len = settings.max_tokens + 4096
            generator, tokenizer, _ = local_generator(str(Path(args.model_dir).expanduser()), sampling.concurrency,
                                                      max_len, seed=args.seed, backend=args.backend,
                                                      echo=lambda line: print(line, file=sys.stderr))
            generate = generator
        else:
            tokenizer = _tokenizer_for(args)
            generator = CompletionsClient(args.base_url, tokenizer, model=args.model,
                                          max_concurrency=sampling.concurrency, max_retries=args.max_retries,
                                          timeout_s=args.request_timeout, api_key=args.api_key, seed=None)
            try:
                name = await generator.start()
            except BackendError as exc:
                sys.exit(f"error: cannot reach the model server at {args.base_url}: {exc} (is it running?)")
            print(f"model server {args.base_url}, model {name}", file=sys.stderr)
            generate = generator
        tool = PythonTool(judge)
        agent = Agent(tokenizer, {tool.name: tool}, settings)
        pool = RewardPool(num_workers=max(1, args.reward_workers), timeout_s=5.0)
        try:
            return await evaluate(items, generate, agent, sampling, folder, pool, progress=not args.no_progress,
                                  log=lambda line: print(line, file=sys.stderr))
        except EvalInterrupted as exc:
            partial = summarize(records_for(read_records(folder.trajectories), items, sampling.n), sampling.n)
            folder.write_summary({**partial, "complete": False, "error": str(exc)})
            where = args.base_url or args.model_dir
            sys.exit(f"error: generation failed ({where}): {exc}\n{exc.done} of {exc.total} trajectories are "
                     f"finished and kept in {folder.trajectories}; rerun the same command to resume")
        finally:
            pool.close()
            if isinstance(generator, CompletionsClient):
                await generator.aclose()
            elif generator is not None:
                from rstar2_agent.engine import backend

                backend.close(generator)
