"""``rstar2-agent math search|eval|score``: upstream ``main.py``'s search (drop-in, on our code judge),
evaluation tasks and the scores of outputs.

    rstar2-agent math search --qaf FILE --custom_cfg NAME|PATH --model_dir DIR [--reward_model_dir DIR]
                             [--save_in_model PATH] [--output PATH] [--limit N] [--judge-url URL]
                             [--backend auto|vllm|transformers|openai] [--base-url URL] [key=value ...]
    rstar2-agent math eval --model DIR --task TASK [--data-dir eval_data] [--custom_cfg sft_eval_greedy] [...]
    rstar2-agent math score FILE... [--top_n 4] [--seed 0]
    rstar2-agent math extract-sft|extract-pairs|sft|ppm ...   (self-evolution: :mod:`.extract`, :mod:`.sft`,
                                                              :mod:`.ppm_train`)
    rstar2-agent math evolve --rounds R [--out DIR] [--model DIR] [--teacher scripted|DIR] [...] (:mod:`.evolve_cli`)

It reads ``question``/``answer`` json or jsonl (:func:`.records.load_questions`), searches ``batch_size``
questions at a time in lock-step, appends one upstream-format line per question to ``--output`` as each
finishes, and skips the questions already there (resume). Without ``--judge-url`` a private code judge is
started for the run, as ``rstar2-agent train`` does. Model-written code runs only in the judge.
``--save_in_model PATH`` is accepted for upstream command lines and names the output when ``--output`` is
not given.

Beside the output, ``<output>.intermediate_metric.json`` holds this invocation's per-rollout pass@1/pass@n
and ``rollout/rolloutNN.<output name>`` every question's tree after its MCTS rollout NN, as upstream's
intermediate rollouts (both with ``save_intermediate_rollouts``, on by default). ``eval`` searches a task
(:mod:`.evaluate`) and prints its pass@1. ``score`` prints a JSON report of one or more output files
(:mod:`.metrics`): pass@1 of each file by its best-valued terminal, and over the files pass@1 / pass@n /
majority / value-weighted majority of the top-n.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from rstar2_agent.math.config import SearchConfig, SearchConfigError, load_config
from rstar2_agent.math.evaluate import TASKS, load_task
from rstar2_agent.math.records import (append_record, drop_questions, load_questions, pending_items, rollout_path,
                                      tree_record)
from rstar2_agent.math.search import Executor, Generator, SearchStats, SearchTree, ValueModel, run_search
from rstar2_agent.math.vllm_backend import BACKENDS, choose_backend

__all__ = ["default_output", "search_file", "search_items", "add_command", "run_search_command",
           "run_eval_command", "run_score_command"]


def default_output(qaf: str, custom_cfg: Optional[str]) -> Path:
    """``<qaf without suffix>.<config name>.jsonl`` next to the questions (stable, so a rerun resumes)."""
    name = Path(custom_cfg).stem if custom_cfg else "default"
    path = Path(qaf)
    return path.with_name(f"{path.stem}.{name}.jsonl")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def progress_bar(total: int, unit: str):
    """A tqdm bar on stderr over the search's rollouts (MCTS) or questions (beam search); off when stderr is
    not a terminal, where the search logs one line per finished question instead."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="search", unit=unit, dynamic_ncols=True, disable=not sys.stderr.isatty())


def search_file(qaf: str | Path, cfg: SearchConfig, generator: Generator, executor: Executor, output: str | Path,
                value_model: Optional[ValueModel] = None, limit: Optional[int] = None,
                log: Callable[[str], None] = _stderr) -> SearchStats:
    """Search the questions of ``qaf`` not yet in ``output``; append each tree as it finishes."""
    return search_items(load_questions(qaf), cfg, generator, executor, output, value_model, limit, log)


def search_items(items: list[dict], cfg: SearchConfig, generator: Generator, executor: Executor,
                 output: str | Path, value_model: Optional[ValueModel] = None, limit: Optional[int] = None,
                 log: Callable[[str], None] = _stderr) -> SearchStats:
    """Search the items not yet in ``output``; append each tree as it finishes."""
    if limit is not None:
        items = items[:limit]
    todo = pending_items(items, output)
    if len(todo) < len(items):
        log(f"resuming: {len(items) - len(todo)} of {len(items)} questions already in {output}")
    stats = SearchStats()
    started = time.monotonic()
    mcts = cfg.mode == "mcts"
    units = cfg.iterations if mcts else 1  # progress units per question
    bar = progress_bar(len(todo) * units, "rollout" if mcts else "question")
    finished, counted = [0], {}

    def progress() -> str:
        elapsed = max(time.monotonic() - started, 1e-9)
        return (f"rounds {stats.rounds}, nodes {stats.nodes} ({stats.nodes / elapsed:.1f}/s), "
                f"tokens {stats.tokens} ({stats.tokens / elapsed:.1f}/s), judge calls {stats.run_calls}")

    def advance(tree: SearchTree, units: int) -> None:
        counted[id(tree)] = counted.get(id(tree), 0) + units
        bar.update(units)
        bar.set_postfix_str(progress(), refresh=False)

    def on_done(tree: SearchTree) -> None:
        append_record(output, tree_record(tree.item, tree.root))
        finished[0] += 1
        advance(tree, units - counted.get(id(tree), 0))  # a tree that ended early
        if bar.disable:
            log(f"[{finished[0]}/{len(todo)}] {progress()}")

    def on_rollout(tree: SearchTree, k: int) -> None:
        if cfg.save_intermediate_rollouts:
            append_record(rollout_path(output, k), tree_record(tree.item, tree.root))
        advance(tree, 1)

    if cfg.save_intermediate_rollouts and mcts:
        pending = {str(item["question"]) for item in todo}
        for snapshot in sorted(rollout_path(output, 1).parent.glob(f"rollout*.{Path(output).name}")):
            drop_questions(snapshot, pending)  # an interrupted run's partial snapshots

    with bar:
        trees = run_search(todo, cfg, generator, executor, value_model, stats, on_done,
                           on_rollout if mcts else None)
    if cfg.save_intermediate_rollouts and mcts and trees:
        from rstar2_agent.math.metrics import rollout_metrics

        metrics = rollout_metrics([(t.answer, t.rollout_answers) for t in trees])
        path = Path(output).with_suffix(".intermediate_metric.json")
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        log(f"per-rollout pass@1/pass@n of this run: {path}")
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
    p.add_argument("--save_in_model", default=None, help="upstream's output option: the output path")
    _add_run_options(p)
    p.set_defaults(func=run_search_command)
    e = commands.add_parser("eval", help="search an evaluation task and report pass@1")
    e.add_argument("--model", "--model_dir", dest="model_dir", required=True, help="the policy model folder")
    e.add_argument("--task", required=True, choices=TASKS, help="an upstream task (file under --data-dir) or bundled")
    e.add_argument("--data-dir", default="eval_data", help="folder in upstream's eval_data layout")
    e.add_argument("--custom_cfg", default="sft_eval_greedy", help="search config (default: greedy)")
    _add_run_options(e)
    e.set_defaults(func=run_eval_command)
    s = commands.add_parser("score", help="pass@1 / pass@n / majority votes of search outputs")
    s.add_argument("files", nargs="+", help="output JSONL files (several: runs of the same questions)")
    s.add_argument("--top_n", type=int, default=4, help="best-valued answers kept per question over the runs")
    s.add_argument("--seed", type=int, default=0, help="seed of the random tie-break of the majority vote")
    s.set_defaults(func=run_score_command)
    from rstar2_agent.math import evolve_cli, extract, ppm_train, sft

    extract.add_commands(commands)  # extract-sft, extract-pairs
    ppm_train.add_command(commands)  # ppm
    sft.add_command(commands)  # sft
    evolve_cli.add_command(commands)  # evolve


def _add_run_options(p) -> None:
    p.add_argument("--reward_model_dir", default=None, help="the PPM folder (base model + value_head.bin)")
    p.add_argument("--output", default=None, help="output JSONL")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--judge-url", default=None, help="a running code judge (default: start a private one)")
    p.add_argument("--judge-workers", type=int, default=2, help="workers of the private judge")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="auto (default): vLLM in this process where it takes the model, else transformers; "
                        "vllm; transformers; openai: an OpenAI-compatible server at --base-url")
    p.add_argument("--base-url", default=None, help="the completions server (vllm serve, SGLang) for --backend openai")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")


def run_score_command(args) -> None:
    from rstar2_agent.math.metrics import multi_run_report, pass_at_1
    from rstar2_agent.math.records import read_records

    runs = [read_records(path) for path in args.files]
    report = multi_run_report(runs, top_n=args.top_n, seed=args.seed)
    report["per_file_pass@1"] = [pass_at_1(run) for run in runs]
    print(json.dumps(report, indent=2))


def make_generator(args, cfg: SearchConfig) -> Generator:
    """The generation backend the command line asks for."""
    if args.backend == "openai":
        if not args.base_url:
            sys.exit("error: --backend openai needs --base-url")
        from rstar2_agent.math.openai_backend import OpenAICompletionsGenerator

        return OpenAICompletionsGenerator(args.base_url, model=args.model_dir)
    backend, why = choose_backend(args.backend, args.model_dir)
    _stderr(f"generation backend: {backend} ({why})")
    if backend == "vllm":
        from rstar2_agent.math.vllm_backend import VLLMGenerator

        generator = VLLMGenerator.from_pretrained(args.model_dir, max_model_len=cfg.max_model_len, seed=cfg.seed or 0,
                                                  tp=cfg.tp, gpu_memory_utilization=cfg.llm_gpu_memory_utilization,
                                                  dtype=cfg.dtype)
        _stderr(f"vLLM weights: {generator.dtype}")
        return generator
    from rstar2_agent.math.backends import TransformersGenerator

    return TransformersGenerator.from_pretrained(args.model_dir, seed=cfg.seed or 0)


def _search(args, items: list[dict], output: Path) -> SearchStats:
    """Build the config, backend, PPM and judge the arguments ask for, and search ``items`` into ``output``."""
    try:
        cfg = load_config(args.custom_cfg, args.overrides)
    except SearchConfigError as exc:
        sys.exit(f"error: {exc}")
    cfg.model_dir = args.model_dir
    cfg.reward_model_dir = args.reward_model_dir or cfg.reward_model_dir
    from rstar2_agent.math.executor import CodeJudgeExecutor

    generator = make_generator(args, cfg)
    value_model = None
    if cfg.reward_model_dir:
        from rstar2_agent.math.ppm import PPMScorer

        value_model = PPMScorer.from_pretrained(cfg.reward_model_dir)
    judge = None
    url = args.judge_url
    if url is None:
        from code_judge.local import LocalJudge

        judge = LocalJudge(workers=args.judge_workers).start()
        url = judge.url
    try:
        return search_items(items, cfg, generator, CodeJudgeExecutor(url), output, value_model, args.limit)
    finally:
        if judge is not None:
            judge.stop()


def run_search_command(args) -> None:
    output = Path(args.output or args.save_in_model or default_output(args.qaf, args.custom_cfg))
    stats = _search(args, load_questions(args.qaf), output)
    print(f"wrote {output} (rounds {stats.rounds}, nodes {stats.nodes}, judge calls {stats.run_calls})")


def run_eval_command(args) -> None:
    from rstar2_agent.math.metrics import pass_at_1
    from rstar2_agent.math.records import read_records

    try:
        items = load_task(args.task, args.data_dir)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    output = Path(args.output or f"{args.task}.{Path(args.custom_cfg).stem}.jsonl")
    _search(args, items, output)
    questions = {str(item["question"]) for item in (items[: args.limit] if args.limit else items)}
    records = [r for r in read_records(output) if str(r["question"]) in questions]
    print(json.dumps({"task": args.task, "questions": len(records), "pass@1": pass_at_1(records),
                      "output": str(output)}))


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="rstar2-agent")
    add_command(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    args.func(args)
