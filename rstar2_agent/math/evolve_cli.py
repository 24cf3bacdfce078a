"""``rstar2-agent math evolve``: rStar-Math self-evolution, round after round, on one machine.

    rstar2-agent math evolve --rounds R [--out DIR] [--model DIR] [--teacher scripted|DIR]
                             [--train-limit N] [--eval-limit N] [--seed S] [--judge-url URL]
                             [--logger wandb|none] [key=value | NAME.key=value ...]

Default preset (CPU): the default CPU model (SmolLM2-135M-Instruct, :func:`rstar2_agent.engine.models.
prepare_default_model`) on the bundled task set, training questions from its ``train`` split and evaluation on
the untouched ``holdout`` split (:mod:`rstar2_agent.data.math_tasks`); ``--train-file`` / ``--eval-file`` take
other question files (``question``/``answer``, json or jsonl). Per round ``r`` (:func:`.evolve.evolve_round`,
each round in ``DIR/round_NN/``):

1. **search** the training questions: round 1 with the teacher (``--teacher scripted``: the scripted CPU
   teacher, :mod:`.teacher`; or a model folder), terminal-guided MCTS (``evolve_teacher.yaml``, sample_mcts
   sized for CPU); later rounds with the previous round's policy + PPM (``evolve_policy.yaml``,
   sft_sample_mcts sized for CPU);
2. **extract** SFT traces and preference pairs; 3. **sft** the policy (from the previous round's policy);
   4. **ppm**: train the PPM from the new policy. A round with no SFT trace carries its input policy over, one
   with no pairs the previous round's PPM (a warning, ``"carried_over": true`` in the metrics line); round 1
   without pairs stops with an error (:mod:`.evolve`);
5. **eval** on the held-out questions: greedy (``evolve_greedy.yaml``), beam search + PPM (``evolve_beam.yaml``)
   and MCTS + PPM (``evolve_mcts.yaml``), pass@1 of the best-valued answer into ``round_NN/eval_<mode>.jsonl``;
   and the PPM's pair accuracy on held-out pairs (**ppm_heldout**).

Before round 1 (round 0): the starting model's greedy pass@1 (``round_00/eval_greedy.jsonl``) and the held-out
pairs: a teacher search of the held-out questions (``DIR/heldout/``), extracted as in step 2.

Every phase appends a line to ``DIR/metrics.jsonl`` (a rerun skips what is done and logs ``"skipped": true``;
a search resumes per question), mirrored to wandb (offline unless ``WANDB_MODE`` says otherwise, files under
``DIR/wandb``) through :class:`rstar2_agent.engine.metrics.MetricsLog`; ``DIR/evolve.png`` plots held-out
pass@1 per mode and the PPM's pair accuracy per round. A tqdm bar on a terminal names the phase; the search and
the Trainer show their own bars inside it.

Overrides: ``key=value`` sets a search key in every search config (``max_tokens=64``); ``NAME.key=value`` in one
of them (NAME: ``teacher``, ``policy``, ``greedy``, ``beam_ppm``, ``mcts_ppm``); ``sft.FLAG=value`` /
``ppm.FLAG=value`` pass ``--FLAG value`` to the training (the flags of ``rstar2-agent math sft|ppm``;
``sft.bf16=true`` passes ``--bf16``); ``pairs.KEY=value`` sets a pair-extraction option (``top_k``,
``one_sided_k``, ``step_margin``, ``min_edit_distance``, ``mode``; the preset keeps upstream's except
``min_edit_distance`` 1, :data:`PAIR_OPTIONS`). ``--seed`` seeds the searches, the teacher and the training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from rstar2_agent.math import evolve
from rstar2_agent.math.config import SearchConfig, SearchConfigError, load_config, parse_overrides

__all__ = ["PRESET", "EVAL_MODES", "SFT_FLAGS", "PPM_FLAGS", "split_overrides", "flag_list", "bundled_items",
           "round_scores", "plot_rounds", "round_searcher", "run_evolve", "add_command"]

# the search config of each role (bundled names, rstar2_agent/config/math/)
PRESET = {"teacher": "evolve_teacher", "policy": "evolve_policy", "greedy": "evolve_greedy",
          "beam_ppm": "evolve_beam", "mcts_ppm": "evolve_mcts"}
EVAL_MODES = ("greedy", "beam_ppm", "mcts_ppm")
# CPU-sized training (upstream: lr 7e-6, 2 epochs, bs 4x8 GPUs x GA 4, FSDP; a 135M model on a few hundred
# examples needs a larger step to learn the step format in a round, and one epoch to fit the 60-minute CPU
# budget: a step of 8 sequences takes tens of seconds on 2 cores). The step markers (<code>, <end_of_step>, ...)
# stay plain text here: as added special tokens they start as new embedding rows, which a few dozen steps do not
# teach (measured: the SFT policy then never wrote <code> and ended its steps with EOS; held-out greedy pass@1
# 0.0125), while their spelling in existing tokens is learnt at once. `rstar2-agent math sft|ppm` add them by
# default, as upstream does; `sft.no_special_tokens=false ppm.no_special_tokens=false` adds them here too.
SFT_FLAGS = {"learning_rate": 1e-4, "num_train_epochs": 1, "per_device_train_batch_size": 8,
             "gradient_accumulation_steps": 1, "max_length": 384, "warmup_steps": 0.05, "weight_decay": 0.0,
             "logging_steps": 5, "save_strategy": "no", "no_special_tokens": True}
PPM_FLAGS = {"learning_rate": 5e-5, "num_train_epochs": 1, "per_device_train_batch_size": 8,
             "gradient_accumulation_steps": 1, "max_length": 384, "warmup_steps": 0.05, "logging_steps": 5,
             "save_strategy": "no", "no_special_tokens": True}
# preference-pair extraction (upstream's defaults, :data:`.extract.PAIR_DEFAULTS`) except the edit-distance
# filter: upstream drops pairs of steps less than 20 characters apart (near-duplicate samples of long LLM steps);
# CPU steps are one or two lines and a real mistake can be one character (``a * b`` vs ``a + b``)
PAIR_OPTIONS = {"min_edit_distance": 1}
_ALIASES = {"beam": "beam_ppm", "bs": "beam_ppm", "mcts": "mcts_ppm"}


def split_overrides(overrides: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, dict], dict[str, dict],
                                                       dict[str, object]]:
    """(search overrides per config role, SFT flags, PPM flags, pair options) from ``key=value`` /
    ``NAME.key=value``.

    >>> search, sft, ppm, pairs = split_overrides(["max_tokens=64", "mcts.iterations=2", "sft.max_steps=3",
    ...                                            "pairs.min_edit_distance=20"])
    >>> search["teacher"], search["mcts_ppm"], sft, ppm, pairs
    (['max_tokens=64'], ['max_tokens=64', 'iterations=2'], {'max_steps': 3}, {}, {'min_edit_distance': 20})
    """
    search: dict[str, list[str]] = {role: [] for role in PRESET}
    training: dict[str, dict] = {"sft": {}, "ppm": {}, "pairs": {}}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SearchConfigError(f"override {item!r} is not key=value")
        scope, dot, name = key.partition(".")
        if not dot:
            for role in PRESET:
                search[role].append(item)
            continue
        scope = _ALIASES.get(scope, scope)
        if scope in training:
            training[scope].update(parse_overrides([f"{name}={value}"]))
        elif scope in PRESET:
            search[scope].append(f"{name}={value}")
        else:
            raise SearchConfigError(f"override {item!r}: no config {scope!r} (known: "
                                    f"{', '.join([*PRESET, 'sft', 'ppm', 'pairs'])})")
    unknown = sorted(set(training["pairs"]) - set(PAIR_KEYS_OPTIONS))
    if unknown:
        raise SearchConfigError(f"pairs.{unknown[0]}: not a pair option (known: {', '.join(PAIR_KEYS_OPTIONS)})")
    return search, training["sft"], training["ppm"], training["pairs"]


PAIR_KEYS_OPTIONS = ("top_k", "one_sided_k", "step_margin", "min_edit_distance", "mode")


def flag_list(flags: dict) -> list[str]:
    """Training flags as a command line: ``{"max_steps": 2, "bf16": True}`` -> ``["--max_steps", "2", "--bf16"]``.

    >>> flag_list({"max_steps": 2, "bf16": True, "fsdp": False})
    ['--max_steps', '2', '--bf16']
    """
    out = []
    for key, value in flags.items():
        if isinstance(value, bool):
            out += [f"--{key}"] if value else []
        else:
            out += [f"--{key}", str(value)]
    return out


def bundled_items(split: str, limit: Optional[int] = None) -> list[dict]:
    """``question``/``answer`` items of a bundled split, the first ``limit`` (families in turn).

    >>> bundled_items("holdout", 2)[1]["question"]
    'What is 8 + 12 - 11?'
    """
    from rstar2_agent.data.math_tasks import load

    rows = [{"question": row["problem"], "answer": row["answer"]} for row in load(split)]
    return rows[:limit] if limit else rows


class Lazy:
    """A generator or PPM built on first use (a resumed run whose phases are done never loads it)."""

    def __init__(self, factory: Callable):
        self.factory = factory
        self.obj = None

    def _get(self):
        if self.obj is None:
            self.obj = self.factory()
        return self.obj

    def generate(self, prompts, n, params):
        return self._get().generate(prompts, n, params)

    def score(self, texts):
        return self._get().score(texts)


def round_scores(metrics: Path) -> dict[int, dict[str, float]]:
    """Per round, the last logged held-out pass@1 of each mode and the PPM's held-out pair accuracy."""
    rounds: dict[int, dict[str, float]] = {}
    if not metrics.exists():
        return rounds
    for line in metrics.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        row = rounds.setdefault(int(rec["round"]), {})
        if rec["phase"] == "eval" and "pass@1" in rec:
            row[rec["mode"]] = rec["pass@1"]
        elif rec["phase"] == "ppm_heldout" and "accuracy" in rec:
            row["ppm_pair_acc"] = rec["accuracy"]
        elif rec["phase"] in ("sft", "ppm") and "train_loss" in rec:
            row[f"{rec['phase']}_loss"] = rec["train_loss"]
        elif rec["phase"] == "extract" and "pairs" in rec:
            row.update(sft_examples=rec["sft_examples"], pairs=rec["pairs"])
    return rounds


def plot_rounds(metrics: Path, png: Path, title: str = "rStar-Math self-evolution") -> Path:
    """Held-out pass@1 per mode and PPM pair accuracy per round (left); SFT / PPM training loss (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = round_scores(metrics)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in (*EVAL_MODES, "ppm_pair_acc"):
        points = sorted((r, row[key]) for r, row in scores.items() if key in row)
        if points:
            xs, ys = zip(*points)
            left.plot(xs, ys, marker="o", linestyle="--" if key == "ppm_pair_acc" else "-",
                      label="PPM pair accuracy (held-out pairs)" if key == "ppm_pair_acc" else f"{key} pass@1")
    left.set_title("held-out")
    left.set_xlabel("round")
    left.set_ylim(-0.02, 1.02)
    for key in ("sft_loss", "ppm_loss"):
        points = sorted((r, row[key]) for r, row in scores.items() if key in row)
        if points:
            xs, ys = zip(*points)
            right.plot(xs, ys, marker="o", label=key)
    right.set_title("training loss")
    right.set_xlabel("round")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


class _Tracker:
    """Forwards new ``metrics.jsonl`` lines to wandb (numbers only, skipped phases left out)."""

    def __init__(self, out: Path, loggers: Sequence[str], config: dict):
        from rstar2_agent.engine.metrics import MetricsLog

        self.metrics = out / "metrics.jsonl"
        self.seen = len(self.metrics.read_text().splitlines()) if self.metrics.exists() else 0
        self.log = MetricsLog(out, list(loggers), "rstar2-agent-math", "math-evolve", config,
                              echo=lambda line: print(line, file=sys.stderr)) if loggers else None

    def sync(self) -> None:
        if self.log is None or not self.metrics.exists():
            return
        lines = self.metrics.read_text().splitlines()
        for line in lines[self.seen:]:
            rec = json.loads(line)
            if rec.get("skipped"):
                continue
            prefix = f"eval/{rec['mode']}" if rec["phase"] == "eval" else rec["phase"]
            values = {f"{prefix}/{k}": v for k, v in rec.items()
                      if k not in ("round", "phase", "mode") and isinstance(v, (int, float))
                      and not isinstance(v, bool) and math.isfinite(v)}
            if values:
                self.log.log(int(rec["round"]), values)
        self.seen = len(lines)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _evaluate(out: Path, round_no: int, items: list[dict], generator, executor, configs: dict[str, SearchConfig],
              value_model, on_phase: Callable[[str], None]) -> dict[str, float]:
    """:func:`.evolve.evaluate_round` per mode; a mode whose file holds every question is scored, not searched."""
    from rstar2_agent.math.metrics import pass_at_1
    from rstar2_agent.math.records import pending_items, read_records

    layout = evolve.round_layout(out, round_no)
    scores = {}
    for name, cfg in configs.items():
        on_phase(f"eval {name}")
        path = layout.dir / f"eval_{name}.jsonl"
        if path.exists() and not pending_items(items, path):
            questions = {str(item["question"]) for item in items}
            scores[name] = pass_at_1([r for r in read_records(path) if str(r["question"]) in questions])
            evolve.append_metrics(out / "metrics.jsonl", {"round": round_no, "phase": "eval", "mode": name,
                                                          "questions": len(items), "pass@1": scores[name],
                                                          "skipped": True})
            continue
        scores.update(evolve.evaluate_round(out, round_no, items, generator, executor, {name: cfg}, value_model))
    return scores


def _heldout_pairs(out: Path, items: list[dict], teacher, executor, cfg: SearchConfig, pair_options: dict,
                   on_phase: Callable[[str], None]) -> list[dict]:
    """Preference pairs from a teacher search of the held-out questions (the PPM's held-out yardstick)."""
    from rstar2_agent.math import extract
    from rstar2_agent.math.records import pending_items
    from rstar2_agent.math.run import search_items

    folder = out / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    trees, pairs = folder / "trees.jsonl", folder / "pairs.jsonl"

    def work() -> dict:
        search_items(list(items), cfg, teacher, executor, trees, log=lambda _: None)
        rows = extract.extract_pairs(extract.load_tree_records(trees), step_delim=cfg.step_delim, **pair_options)
        extract.write_rows(pairs, rows)
        return {"questions": len(items), "pairs": len(rows)}

    evolve.run_phase("heldout_pairs", 0, lambda: pairs.exists() and trees.exists() and not pending_items(items, trees),
                     work, out / "metrics.jsonl", on_phase)
    return extract.read_rows(pairs, extract.PAIR_KEYS) if pairs.stat().st_size else []


def _ppm_heldout(out: Path, round_no: int, ppm_dir: Path, pairs: list[dict], on_phase) -> Optional[float]:
    from rstar2_agent.math.ppm import PPMScorer
    from rstar2_agent.math.ppm_train import evaluate_pairs

    saved = evolve.round_layout(out, round_no).dir / "ppm_heldout.json"

    def work() -> dict:
        result = evaluate_pairs(PPMScorer.from_pretrained(ppm_dir), pairs) if pairs else {"pairs": 0}
        saved.write_text(json.dumps(result) + "\n")
        return result

    evolve.run_phase("ppm_heldout", round_no, saved.exists, work, out / "metrics.jsonl", on_phase)
    return json.loads(saved.read_text()).get("accuracy")


def _make_generator(model_dir: str, backend: str, cfg: SearchConfig):
    from rstar2_agent.math.run import make_generator

    return make_generator(argparse.Namespace(backend=backend, model_dir=model_dir, base_url=None), cfg)


def round_searcher(round_no: int, teacher, policy_in, ppm_in, configs: dict[str, SearchConfig],
                   backend: str = "auto") -> tuple:
    """(generator, value model, search config) of round ``round_no``'s search: round 1 the teacher without a
    PPM; later rounds the previous round's policy and PPM (both loaded on first use, :class:`Lazy`)."""
    if round_no == 1:
        return teacher, None, configs["teacher"]
    from rstar2_agent.math.ppm import PPMScorer

    generator = Lazy(lambda: _make_generator(str(policy_in), backend, configs["policy"]))
    return generator, Lazy(lambda: PPMScorer.from_pretrained(ppm_in)), configs["policy"]


def run_evolve(args, executor=None, log: Callable[[str], None] = print) -> dict[int, dict[str, float]]:
    """The whole run (see the module docstring); returns :func:`round_scores`. ``executor``: a code executor
    to use instead of the code judge (tests)."""
    from tqdm.auto import tqdm

    from rstar2_agent.math.executor import CodeJudgeExecutor
    from rstar2_agent.math.ppm import PPMScorer
    from rstar2_agent.math.teacher import ScriptedTeacher

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    search_over, sft_over, ppm_over, pair_over = split_overrides(args.overrides)
    pair_options = {**PAIR_OPTIONS, **pair_over}
    configs = {role: load_config(name, [f"seed={args.seed}"] * (role != "greedy") + search_over[role])
               for role, name in PRESET.items()}
    sft_flags = flag_list({**SFT_FLAGS, "seed": args.seed, **sft_over})
    ppm_flags = flag_list({**PPM_FLAGS, "seed": args.seed, **ppm_over})
    if args.model:
        model = args.model
    else:
        from rstar2_agent.engine.models import prepare_default_model

        model = prepare_default_model(log=log)
    from rstar2_agent.math.records import load_questions

    train = load_questions(args.train_file)[: args.train_limit or None] if args.train_file \
        else bundled_items("train", args.train_limit)
    held = load_questions(args.eval_file)[: args.eval_limit or None] if args.eval_file \
        else bundled_items("holdout", args.eval_limit)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(EVAL_MODES))
    if unknown:
        raise SearchConfigError(f"--modes: unknown {unknown}; known: {', '.join(EVAL_MODES)}")
    teacher = ScriptedTeacher(seed=args.seed) if args.teacher == "scripted" else \
        Lazy(lambda: _make_generator(args.teacher, args.backend, configs["teacher"]))
    (out / "run.json").write_text(json.dumps({"argv": sys.argv, "model": model, "teacher": args.teacher,
                                              "rounds": args.rounds, "seed": args.seed,
                                              "train_questions": len(train), "eval_questions": len(held),
                                              "overrides": list(args.overrides), "sft_flags": sft_flags,
                                              "ppm_flags": ppm_flags, "pair_options": pair_options},
                                             indent=1) + "\n")
    tracker = _Tracker(out, [] if args.logger == "none" else [args.logger],
                       {"rounds": args.rounds, "seed": args.seed, "model": model, "teacher": args.teacher,
                        "train_questions": len(train), "eval_questions": len(held)})
    judge = None
    if executor is None:
        url = args.judge_url
        if url is None:
            from code_judge.local import LocalJudge

            judge = LocalJudge(workers=args.judge_workers).start()
            url = judge.url
        executor = CodeJudgeExecutor(url)
    total = 2 + ("greedy" in modes) + args.rounds * (5 + len(modes))
    bar = tqdm(total=total, desc="evolve", unit="phase", dynamic_ncols=True, disable=not sys.stderr.isatty())
    current = {"round": 0}

    def on_phase(name: str) -> None:
        tracker.sync()
        bar.set_description(f"evolve round {current['round']}: {name}")
        bar.update(1)

    def warn(message: str) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)

    try:
        heldout_pairs = _heldout_pairs(out, held, teacher, executor, configs["teacher"], pair_options, on_phase)
        if "greedy" in modes:
            base = Lazy(lambda: _make_generator(model, args.backend, configs["greedy"]))
            _evaluate(out, 0, held, base, executor, {"greedy": configs["greedy"]}, None, on_phase)
        policy_in, ppm_in = model, None
        for r in range(1, args.rounds + 1):
            current["round"] = r
            generator, value_model, cfg = round_searcher(r, teacher, policy_in, ppm_in, configs, args.backend)
            layout = evolve.evolve_round(out, r, train, policy_in, generator, executor, cfg, value_model,
                                         sft_flags=sft_flags, ppm_flags=ppm_flags, pair_options=pair_options,
                                         on_phase=on_phase, ppm_in=ppm_in, warn=warn)
            policy = Lazy(lambda p=layout.policy: _make_generator(str(p), args.backend, configs["greedy"]))
            ppm = Lazy(lambda p=layout.ppm: PPMScorer.from_pretrained(p))
            _evaluate(out, r, held, policy, executor, {m: configs[m] for m in modes}, ppm, on_phase)
            _ppm_heldout(out, r, layout.ppm, heldout_pairs, on_phase)
            policy_in, ppm_in = layout.policy, layout.ppm
    finally:
        bar.close()
        tracker.sync()
        tracker.close()
        if judge is not None:
            judge.stop()
    png = plot_rounds(out / "metrics.jsonl", out / "evolve.png")
    scores = round_scores(out / "metrics.jsonl")
    log(summary_table(scores))
    log(f"metrics: {out / 'metrics.jsonl'}  plot: {png}")
    return scores


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def summary_table(scores: dict[int, dict[str, float]]) -> str:
    """A markdown table: held-out pass@1 per mode and PPM pair accuracy per round.

    >>> print(summary_table({0: {"greedy": 0.1}, 1: {"greedy": 0.25, "ppm_pair_acc": 0.8, "pairs": 12}}))
    | round | greedy | beam_ppm | mcts_ppm | ppm pair acc | sft examples | pairs |
    |---|---|---|---|---|---|---|
    | 0 | 0.100 | - | - | - | - | - |
    | 1 | 0.250 | - | - | 0.800 | - | 12 |
    """
    lines = ["| round | greedy | beam_ppm | mcts_ppm | ppm pair acc | sft examples | pairs |", "|---|---|---|---|---|---|---|"]
    for r in sorted(scores):
        row = scores[r]
        lines.append("| " + " | ".join([str(r), *(_fmt(row.get(k)) for k in (*EVAL_MODES, "ppm_pair_acc",
                                                                             "sft_examples", "pairs"))]) + " |")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--rounds", type=int, required=True, help="self-evolution rounds (round 1 uses the teacher)")
    p.add_argument("--out", default="math_evolve", help="run folder (round_NN/, metrics.jsonl, evolve.png)")
    p.add_argument("--model", default=None, help="the starting policy (default: the default CPU model)")
    p.add_argument("--teacher", default="scripted", help="round-1 generator: 'scripted' (the bundled task "
                                                         "families only) or a model folder")
    p.add_argument("--train-file", default=None, help="training questions (default: bundled train split)")
    p.add_argument("--eval-file", default=None, help="held-out questions (default: bundled holdout split)")
    p.add_argument("--train-limit", type=int, default=None, help="only the first N training questions")
    p.add_argument("--eval-limit", type=int, default=None, help="only the first N held-out questions")
    p.add_argument("--modes", default=",".join(EVAL_MODES), help="evaluation modes, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-url", default=None, help="a running code judge (default: start a private one)")
    p.add_argument("--judge-workers", type=int, default=2, help="workers of the private judge")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "transformers"],
                   help="generation backend of the policy (auto: vLLM where it takes the model)")
    p.add_argument("--logger", default="wandb", help="wandb (offline by default) or none")
    p.add_argument("overrides", nargs="*", help="key=value (every search config), NAME.key=value "
                                                "(teacher, policy, greedy, beam_ppm, mcts_ppm), sft.FLAG=value, "
                                                "ppm.FLAG=value")


def run_evolve_command(args) -> None:
    if args.rounds < 1:
        sys.exit("error: --rounds must be >= 1")
    try:
        run_evolve(args)
    except (SearchConfigError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")


def add_command(commands) -> None:
    """``evolve`` under ``rstar2-agent math``."""
    p = commands.add_parser("evolve", help="self-evolution rounds: search, extract, SFT, PPM, evaluate",
                            description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=run_evolve_command)
