"""Chat with a model that can run Python, through the training-time agent loop, tool, chat template and judge.

    python3 examples/chat_with_tool_call.py --base-url http://127.0.0.1:8000 --model /models/ckpt
    python3 examples/chat_with_tool_call.py --model-dir ~/models/my-checkpoint --system-prompt cpu

Each of your messages starts one agent-loop trajectory (`rstar2_agent.rollout.AgentLoop`, as in training and
in `rstar2-agent eval`): the model writes, every `<tool_call>` runs on the code judge (`--judge-url`, or a
private one started here), its output goes back to the model, until the model answers without a call or the
turn/token budget is spent. Each model turn, tool call and tool output is printed as it happens. The
conversation, tool messages included, is the prompt of your next message. `/reset` starts over, `/quit` (or
an empty line, or Ctrl-D) ends.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

TOOL_RESPONSE = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.S)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default=None, help="an OpenAI-compatible completions server")
    ap.add_argument("--model", default=None, help="the served model's name (default: the server's first)")
    ap.add_argument("--tokenizer", default=None, help="the served model's tokenizer folder (default: --model)")
    ap.add_argument("--model-dir", default=None, help="a model folder, run in this process")
    ap.add_argument("--judge-url", default=None, help="a running code judge (default: start a private one)")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-tokens", type=int, default=2048, help="budget of one reply, tool turns included")
    ap.add_argument("--max-turns", type=int, default=5, help="assistant turns per reply")
    ap.add_argument("--system-prompt", default="template", help="template, cpu, or the text of one")
    args = ap.parse_args(argv)
    if bool(args.base_url) == bool(args.model_dir):
        ap.error("give either --base-url URL or --model-dir DIR")
    return args


def say(prefix: str, text: str) -> None:
    print(f"\033[2m{prefix}\033[0m {text}" if sys.stdout.isatty() else f"{prefix} {text}", flush=True)


async def chat(args, judge_url: str) -> None:
    from code_judge.client import CodeJudgeClient

    from rstar2_agent.eval.agent import Agent, AgentSettings
    from rstar2_agent.eval.clients import CompletionsClient, local_generator
    from rstar2_agent.tools import PythonTool

    settings = AgentSettings(max_tokens=args.max_tokens, max_turns=args.max_turns, system_prompt=args.system_prompt)
    async with CodeJudgeClient(judge_url) as judge:
        if args.model_dir:
            generate, tokenizer, _ = local_generator(str(Path(args.model_dir).expanduser()), 4,
                                                     args.max_tokens + 4096, backend="auto")
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
            generate = CompletionsClient(args.base_url, tokenizer, model=args.model, max_concurrency=1)
            print(f"model: {await generate.start()} at {args.base_url}")
        tool = PythonTool(judge)
        agent = Agent(tokenizer, {tool.name: tool}, settings)
        params = {"temperature": args.temperature, "top_p": args.top_p}

        async def generate_and_show(request_id, token_ids, sampling_params):
            out = await generate(request_id, token_ids, sampling_params)
            say("assistant>", tokenizer.decode(out.token_ids, skip_special_tokens=True).strip())
            return out

        def show_call(call: dict) -> None:
            say("  tool call>", f"{call['name']}: {call['arguments'].get('code', call['arguments'])}")

        def show_output(call: dict) -> None:
            say("  tool output>", call["output"])

        messages: list[dict] = []
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if line in ("", "/quit", "/exit"):
                break
            if line == "/reset":
                messages = []
                continue
            messages.append({"role": "user", "content": line})
            ids = agent.prompt_ids(messages)
            loop = agent.loop(on_call=show_output, on_start=show_call)
            traj = await loop.run(ids, generate_and_show, params)
            messages += history_messages(agent, traj)
            s = traj.stats
            say("  (done:", f"{s.finish_reason}, {s.tool_calls} tool call(s), {len(traj.response_ids)} tokens)")
        if hasattr(generate, "aclose"):
            await generate.aclose()


def history_messages(agent, traj) -> list[dict]:
    """The trajectory as chat messages: each model turn, and the tool responses the model saw after it."""
    from rstar2_agent.eval.agent import turns_of

    out = []
    for turn in turns_of(agent.tokenizer, traj):
        if turn["role"] == "assistant":
            text = turn["text"].replace(agent.tokenizer.eos_token or "\0", "").strip()
            out.append({"role": "assistant", "content": text})
        else:
            out += [{"role": "tool", "content": body} for body in TOOL_RESPONSE.findall(turn["text"])]
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    judge = None
    url = args.judge_url
    if url is None:
        from code_judge.local import LocalJudge

        print("starting a private code judge ...", file=sys.stderr)
        judge = LocalJudge(workers=1).start()
        url = judge.url
    try:
        asyncio.run(chat(args, url))
    except KeyboardInterrupt:
        pass
    finally:
        if judge is not None:
            judge.stop()


if __name__ == "__main__":
    main()
