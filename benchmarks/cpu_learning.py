"""Does `rstar2-agent train` learn? The default CPU preset for a fixed number of steps, over several seeds,
judged on problems no setting was tuned on.

For each seed it runs the default preset (`cpu_trainer`: SmolLM2-135M-Instruct, the bundled task set, a private
code judge) through `CPUTrainer` and validates on the bundled `holdout` split (80 problems that no preset
choice looked at; the 80 `test` problems are the dev set the preset was tuned on, `--split test` measures
there), sampled at temperature 0.6 as rStar2-Agent evaluates, after the cold start ("before") and after the
last GRPO-RoC step ("after"). Per seed it prints a table of accuracy, mean reward and tool use, overall and per
task family, and writes into benchmarks/results/:

    cpu_learning_<split>_seed<N>.json           before/after of that seed
    cpu_learning_<split>_seed<N>.metrics.jsonl  the run's whole metrics.jsonl (every step and validation)
    cpu_learning_<split>_seed<N>.png            its curves

and, over every seed file of that split present (this run's and earlier ones), `cpu_learning_<split>.json`
with each metric's mean, sample standard deviation, min and max, before and after. The last line reads
`accuracy before: A +- s after: B +- s (n seeds)`.

    python3 benchmarks/cpu_learning.py [--steps 8] [--seeds 1 2 3] [--split holdout] [key=value ...]
    python3 benchmarks/cpu_learning.py --summarize      # only the summary, from the seed files present

About 4 minutes per step on 2 cores, plus 2 minutes of cold start and about 3 per validation: 41 minutes per
seed for 8 steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
HEADLINE = ["val/accuracy", "val/reward_mean", "val/tool_calls_per_traj", "val/tool_error_ratio"]


def seed_files(split: str) -> list[Path]:
    return sorted(RESULTS.glob(f"cpu_learning_{split}_seed*.json"))


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max.

    >>> spread([0.5, 0.7, 0.6])
    {'mean': 0.6, 'std': 0.1, 'min': 0.5, 'max': 0.7, 'n': 3}
    """
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 6), "std": round(std, 6), "min": min(values),
            "max": max(values), "n": len(values)}


def summarize(split: str) -> dict:
    """The summary over every seed file of `split`: for "before" and "after", each headline metric's spread."""
    runs = [json.loads(p.read_text()) for p in seed_files(split)]
    if not runs:
        raise SystemExit(f"no benchmarks/results/cpu_learning_{split}_seed*.json yet: run the benchmark first")
    summary = {"split": split, "seeds": [r["seed"] for r in runs], "steps": sorted({r["steps"] for r in runs})}
    for phase in ("before", "after"):
        summary[phase] = {k: spread([r[phase][k] for r in runs]) for k in HEADLINE if k in runs[0][phase]}
    (RESULTS / f"cpu_learning_{split}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def run_seed(seed: int, args) -> dict:
    """One seeded run; its table printed and its files written. Returns the before/after record."""
    from rstar2_agent.engine.config import compose
    from rstar2_agent.engine.metrics import format_duration, read_metrics
    from rstar2_agent.engine.trainer import CPUTrainer

    out = Path(args.out) / f"seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = compose("cpu_trainer", [f"trainer.total_training_steps={args.steps}", f"trainer.seed={seed}",
                                  f"trainer.default_local_dir={out}", "data.val_size=0",
                                  f"data.val_files=bundled:{args.split}",
                                  "trainer.val_before_train=true", "trainer.test_freq=4", "trainer.save_freq=0",
                                  "trainer.logger=[console,jsonl]", "trainer.experiment_name=cpu-learning",
                                  *args.overrides])
    start = time.perf_counter()
    CPUTrainer(cfg).fit()
    elapsed = time.perf_counter() - start

    vals = [r for r in read_metrics(out / "metrics.jsonl") if "val/accuracy" in r]
    before, after = vals[0], vals[-1]
    keys = HEADLINE + sorted(k for k in before if k.startswith("val/accuracy/"))
    print(f"\nCPU learning: {args.steps} GRPO-RoC steps, seed {seed}, {int(before['val/size'])} {args.split} "
          f"problems, {format_duration(elapsed)}")
    print(f"| {'metric':<32} | {'before (step 0)':>15} | {'after (step ' + str(after['step']) + ')':>15} | ratio |")
    print(f"|{'-' * 34}|{'-' * 17}|{'-' * 17}|-------|")
    for key in keys:
        b, a = before.get(key, 0.0), after.get(key, 0.0)
        ratio = f"{a / b:.2f}" if b else "  -  "
        print(f"| {key:<32} | {b:>15.3f} | {a:>15.3f} | {ratio:>5} |")
    stem = RESULTS / f"cpu_learning_{args.split}_seed{seed}"
    record = {"steps": args.steps, "seed": seed, "split": args.split, "seconds": round(elapsed),
              "overrides": args.overrides, "before": before, "after": after}
    shutil.copy(out / "curves.png", stem.with_suffix(".png"))
    shutil.copy(out / "metrics.jsonl", stem.with_suffix(".metrics.jsonl"))
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--split", default="holdout", choices=["holdout", "test"],
                    help="validation problems: holdout (untouched) or test (the dev set)")
    ap.add_argument("--out", default="/tmp/rstar2-cpu-learning", help="run directories (replaced)")
    ap.add_argument("--summarize", action="store_true", help="only write the summary of the seed files present")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides of cpu_trainer")
    args = ap.parse_args()

    RESULTS.mkdir(exist_ok=True)
    if not args.summarize:
        for seed in args.seeds:
            run_seed(seed, args)
    summary = summarize(args.split)
    before, after = summary["before"]["val/accuracy"], summary["after"]["val/accuracy"]
    print(f"\nsummary: benchmarks/results/cpu_learning_{args.split}.json (seeds {summary['seeds']})")
    print(f"accuracy before: {before['mean']:.3f} +- {before['std']:.3f} after: {after['mean']:.3f} +- "
          f"{after['std']:.3f} ({before['n']} seeds)")


if __name__ == "__main__":
    main()
