"""``rstar2-agent math search``: upstream ``main.py``'s search, drop-in, on our code judge.

    rstar2-agent math search --qaf FILE --custom_cfg NAME|PATH --model_dir DIR [--reward_model_dir DIR]
                             [--output PATH] [--limit N] [--judge-url URL] [key=value ...]

It reads ``question``/``answer`` json or jsonl (:func:`.records.load_questions`), searches ``batch_size``
questions at a time in lock-step, appends one upstream-format line per question to ``--output`` as each
finishes, and skips the questions already there (resume). Without ``--judge-url`` a private code judge is
started for the run, as ``rstar2-agent train`` does. Model-written code runs only in the judge.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from rstar2_agent.math.config import SearchConfig, SearchConfigError, load_config
from rstar2_agent.math.records import append_record, load_questions, pending_items, tree_record
from rstar2_agent.math.search import Executor, Generator, SearchStats, SearchTree, ValueModel, run_search

__all__ = ["default_output", "search_file", "add_command", "run_search_command"]


def default_output(qaf: str, custom_cfg: Optional[str]) -> Path:
    """``<qaf without suffix>.<config name>.jsonl`` next to the questions (stable, so a rerun resumes)."""
    name = Path(custom_cfg).stem if custom_cfg else "default"
    path = Path(qaf)
    return path.with_name(f"{path.stem}.{name}.jsonl")


def search_file(qaf: str | Path, cfg: SearchConfig, generator: Generator, executor: Executor, output: str | Path,
                value_model: Optional[ValueModel] = None, limit: Optional[int] = None,
                log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> SearchStats:
    """Search the questions of ``qaf`` not yet in ``output``; append each tree as it finishes."""
    items = load_questions(qaf)
    if limit is not None:
        items = items[:limit]
    todo = pending_items(items, output)
    if len(todo) < len(items):
        log(f"resuming: {len(items) - len(todo)} of {len(items)} questions already in {output}")
    stats = SearchStats()
    started = time.monotonic()
    finished = [0]

    def on_done(tree: SearchTree) -> None:
        append_record(output, tree_record(tree.item, tree.root))
        finished[0] += 1
        elapsed = max(time.monotonic() - started, 1e-9)
        log(f"[{finished[0]}/{len(todo)}] rounds {stats.rounds}, nodes {stats.nodes} ({stats.nodes / elapsed:.1f}/s), "
            f"tokens {stats.tokens} ({stats.tokens / elapsed:.1f}/s), judge calls {stats.run_calls}")

    run_search(todo, cfg, generator, executor, value_model, stats, on_done)
    return stats


def add_command(sub) -> None:
    """The ``math`` group and its ``search`` command."""
    math_parser = sub.add_parser("math", help="rStar-Math: tree search over code-augmented steps")
    commands = math_parser.add_subparsers(dest="math_command", required=True)
    p = commands.add_parser("search", help="MCTS / step beam search / greedy over a question file",
                            description=__doc__.split("\n\n")[0])
    p.add_argument("--qaf", required=True, help="question/answer file (json or jsonl)")
    p.add_argument("--custom_cfg", default=None, help="a bundled config name (sft_eval_mcts, cpu, ...) or a yaml path")
    p.add_argument("--model_dir", required=True, help="the policy model folder")
    p.add_argument("--reward_model_dir", default=None, help="the PPM folder (base model + value_head.bin)")
    p.add_argument("--output", default=None, help="output JSONL (default: <qaf>.<config>.jsonl)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--judge-url", default=None, help="a running code judge (default: start a private one)")
    p.add_argument("--judge-workers", type=int, default=2, help="workers of the private judge")
    p.add_argument("--backend", default="transformers", choices=["transformers"], help="generation backend")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    p.set_defaults(func=run_search_command)


def run_search_command(args) -> None:
    try:
        cfg = load_config(args.custom_cfg, args.overrides)
    except SearchConfigError as exc:
        sys.exit(f"error: {exc}")
    cfg.model_dir = args.model_dir
    cfg.reward_model_dir = args.reward_model_dir or cfg.reward_model_dir
    from rstar2_agent.math.backends import TransformersGenerator
    from rstar2_agent.math.executor import CodeJudgeExecutor

    generator = TransformersGenerator.from_pretrained(args.model_dir, seed=cfg.seed or 0)
    value_model = None
    if cfg.reward_model_dir:
        from rstar2_agent.math.ppm import PPMScorer

        value_model = PPMScorer.from_pretrained(cfg.reward_model_dir)
    output = Path(args.output) if args.output else default_output(args.qaf, args.custom_cfg)
    judge = None
    url = args.judge_url
    if url is None:
        from code_judge.local import LocalJudge

        judge = LocalJudge(workers=args.judge_workers).start()
        url = judge.url
    try:
        stats = search_file(args.qaf, cfg, generator, CodeJudgeExecutor(url), output, value_model, args.limit)
    finally:
        if judge is not None:
            judge.stop()
    print(f"wrote {output} (rounds {stats.rounds}, nodes {stats.nodes}, judge calls {stats.run_calls})")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="rstar2-agent")
    add_command(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    args.func(args)
