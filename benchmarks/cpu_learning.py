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

`--trainer verl` runs the same measurement through verl 0.9.1's own trainer on CPU (`python3 -m
rstar2_agent.main --config-name rstar2_agent_trainer_cpu`, our vLLM CPU rollout replica), on the settings of
benchmarks/verl_cpu_vs_engine.py (the engine's default preset as verl keys). verl has no cold start, so each
seed first runs the engine's cold start alone (`rstar2-agent train trainer.total_training_steps=0`, the same
SFT that the engine seed starts from) and verl trains from its saved model, on prompts that start with the
engine's system prompt (`python3 -m rstar2_agent.verl_cpu.data --engine-system-prompt`: the model was taught
under that one; under the template's default system text seed 1's cold-started model scored 0.0375). One
difference stays: verl's agent loop lists the tool schema after that system text, where the engine leaves
it out, so verl's prompts are about 455 tokens against the engine's 122. verl validates before training and
after its last step on the same split at the same temperature (`val_kwargs`: sampled, 0.6, one answer each);
accuracy is verl's `val-core/<data source>/acc/mean@1`. Files are named `cpu_learning_verl_<split>...`, the
log of each seed's verl run is kept beside them, and the summary covers the verl seed files only:

    python3 benchmarks/cpu_learning.py --trainer verl [--steps 8] [--seeds 1 2 3]   # about 50 minutes a seed
    python3 benchmarks/cpu_learning.py --record /tmp/rstar2-cpu-learning/verl_seed1  # results of a kept run again
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
HEADLINE = ["val/accuracy", "val/reward_mean", "val/tool_calls_per_traj", "val/tool_error_ratio"]
# verl's validation metrics under the engine's names (its data source, rstar_cpu_math_tasks, in the middle)
VERL_HEADLINE = {"val/accuracy": re.compile(r"val-core/[^/]+/acc/mean@1$"),
                 "val/reward_mean": re.compile(r"val-aux/[^/]+/reward/mean@1$"),
                 "val/num_turns_mean": re.compile(r"val-aux/num_turns/mean$")}
STEP = re.compile(r"(?:^|\s)step:(\d+) - (.*)$")
METRIC = re.compile(r"^([^:\s]+):(?:np\.\w+\()?([-+0-9.eE]+|nan|inf)\)?$")


def stem(trainer: str, split: str) -> str:
    """The results' file stem: cpu_learning_<split> for the engine, cpu_learning_verl_<split> for verl."""
    return f"cpu_learning_{split}" if trainer == "engine" else f"cpu_learning_{trainer}_{split}"


def seed_files(split: str, trainer: str = "engine") -> list[Path]:
    return sorted(RESULTS.glob(f"{stem(trainer, split)}_seed*.json"))


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max.

    >>> spread([0.5, 0.7, 0.6])
    {'mean': 0.6, 'std': 0.1, 'min': 0.5, 'max': 0.7, 'n': 3}
    """
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 6), "std": round(std, 6), "min": min(values),
            "max": max(values), "n": len(values)}


def summarize(split: str, trainer: str = "engine") -> dict:
    """The summary over every seed file of `split` (of one trainer): for "before" and "after", each headline
    metric's spread."""
    runs = [json.loads(p.read_text()) for p in seed_files(split, trainer)]
    if not runs:
        raise SystemExit(f"no benchmarks/results/{stem(trainer, split)}_seed*.json yet: run the benchmark first")
    summary = {"split": split, "trainer": trainer, "seeds": [r["seed"] for r in runs],
               "steps": sorted({r["steps"] for r in runs})}
    keys = HEADLINE if trainer == "engine" else list(VERL_HEADLINE)
    for phase in ("before", "after"):
        summary[phase] = {k: spread([r[phase][k] for r in runs]) for k in keys if k in runs[0][phase]}
    (RESULTS / f"{stem(trainer, split)}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def verl_step_metrics(log_text: str) -> dict[int, dict[str, float]]:
    """The numbers of every `step:N - key:value - ...` line that verl's console logger printed (after Ray's
    `(TaskRunnerV1 pid=...)` prefix), by step; a step printed twice is merged.

    >>> verl_step_metrics("x\\n(TaskRunnerV1 pid=7) step:0 - val-core/src/acc/mean@1:np.float64(0.25) - note:abc\\n"
    ...                   "step:1 - timing_s/step:12.5 - val-aux/num_turns/mean:2")
    {0: {'val-core/src/acc/mean@1': 0.25}, 1: {'timing_s/step': 12.5, 'val-aux/num_turns/mean': 2.0}}
    """
    steps: dict[int, dict[str, float]] = {}
    for line in log_text.splitlines():
        m = STEP.search(line)
        if not m:
            continue
        found = steps.setdefault(int(m.group(1)), {})
        for item in m.group(2).split(" - "):
            pair = METRIC.match(item.strip())
            if pair:
                found[pair.group(1)] = float(pair.group(2))
    return steps


def verl_headline(metrics: dict[str, float]) -> dict[str, float]:
    """verl's validation metrics of one step under the engine's names (VERL_HEADLINE); {} if it validated not.

    >>> verl_headline({"val-core/src/acc/mean@1": 0.5, "val-aux/src/reward/mean@1": 0.5, "critic/x": 1.0})
    {'val/accuracy': 0.5, 'val/reward_mean': 0.5}
    """
    out = {}
    for name, pattern in VERL_HEADLINE.items():
        for key, value in metrics.items():
            if pattern.search(key):
                out[name] = value
    return out


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


def run_seed_verl(seed: int, args) -> dict:
    """One seed through verl's own trainer, from the engine's cold start of that seed; files written."""
    sys.path.insert(0, str(Path(__file__).parent))
    from verl_cpu_vs_engine import run_engine, run_verl

    from rstar2_agent.engine.config import ColdStartConfig

    work = Path(args.out) / f"verl_seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    cold = run_engine(work, 0, 1800, "vllm_cpu", (f"cold_start.steps={ColdStartConfig().steps}",
                                                  f"trainer.seed={seed}", "trainer.logger=[console]"))
    model = work / "engine" / "global_step_0"
    if cold["rc"] != 0 or not (model / "config.json").exists():
        raise SystemExit(f"the engine's cold start failed (rc {cold['rc']}): see {cold['log']}")
    print(f"cold start: {model} ({cold['wall_s']:.0f} s)", flush=True)
    overrides = (f"cpu_model={model}", f"data.seed={seed}", "data.val_batch_size=null",
                 "trainer.val_before_train=True", f"trainer.test_freq={args.steps}",
                 "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
                 "actor_rollout_ref.rollout.val_kwargs.temperature=0.6",
                 "actor_rollout_ref.rollout.val_kwargs.top_p=1.0", "actor_rollout_ref.rollout.val_kwargs.n=1",
                 *args.overrides)
    run = run_verl(work, args.steps, args.budget_s, "vllm_cpu", val_split=args.split, overrides=overrides,
                   data_args=("--engine-system-prompt",))
    ran = {"seed": seed, "steps": args.steps, "split": args.split, "seconds": round(time.perf_counter() - start),
           "cold_start_s": round(cold["wall_s"]), "rc": run["rc"], "verl_command": run["command"]}
    (work / "run.json").write_text(json.dumps(ran, indent=1) + "\n")
    return record_seed_verl(work)


def record_seed_verl(work: Path) -> dict:
    """The before/after record of a finished verl seed in `work` (its run.json and verl.log): table printed,
    results files written (`--record WORK` redoes this for a run whose files are kept)."""
    ran = json.loads((work / "run.json").read_text())
    steps = verl_step_metrics((work / "verl.log").read_text(errors="replace"))
    vals = [(step, found) for step in sorted(steps) if (found := verl_headline(steps[step]))]
    if ran["rc"] != 0 or len(vals) < 2 or vals[-1][0] != ran["steps"]:
        raise SystemExit(f"verl's run did not validate before and after step {ran['steps']} (rc {ran['rc']}, "
                         f"validations at steps {[s for s, _ in vals]}): see {work / 'verl.log'}")
    (before_step, before), (after_step, after) = vals[0], vals[-1]
    print(f"\nverl-on-CPU learning: {ran['steps']} GRPO-RoC steps, seed {ran['seed']}, {ran['split']} problems, "
          f"{ran['seconds'] / 60:.1f} min")
    print(f"| {'metric':<20} | {'before (step 0)':>15} | {'after (step ' + str(after_step) + ')':>15} |")
    print(f"|{'-' * 22}|{'-' * 17}|{'-' * 17}|")
    for key in VERL_HEADLINE:
        if key in before:
            print(f"| {key:<20} | {before[key]:>15.3f} | {after.get(key, float('nan')):>15.3f} |")
    out = RESULTS / f"{stem('verl', ran['split'])}_seed{ran['seed']}"
    with open(out.with_suffix(".metrics.jsonl"), "w") as f:
        for step in sorted(steps):
            f.write(json.dumps({"step": step, **steps[step]}) + "\n")
    shutil.copy(work / "verl.log", out.with_suffix(".log"))
    record = {"trainer": "verl", **ran, "step_s": [steps[k]["timing_s/step"] for k in sorted(steps)
                                                   if "timing_s/step" in steps[k]],
              "before": {"step": before_step, **before}, "after": {"step": after_step, **after}}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--split", default="holdout", choices=["holdout", "test"],
                    help="validation problems: holdout (untouched) or test (the dev set)")
    ap.add_argument("--out", default="/tmp/rstar2-cpu-learning", help="run directories (replaced)")
    ap.add_argument("--summarize", action="store_true", help="only write the summary of the seed files present")
    ap.add_argument("--trainer", default="engine", choices=["engine", "verl"],
                    help="the in-process engine (rstar2-agent train) or verl's own trainer on CPU")
    ap.add_argument("--budget-s", type=float, default=3600.0, help="verl only: the most one seed's verl run may take")
    ap.add_argument("--record", metavar="WORK", default=None,
                    help="verl only: write the results of the finished seed run in WORK (--out/verl_seed<N>)")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides (of cpu_trainer, or of verl's CPU preset)")
    args = ap.parse_args()

    RESULTS.mkdir(exist_ok=True)
    if args.record:
        args.trainer, args.split = "verl", record_seed_verl(Path(args.record))["split"]
    elif not args.summarize:
        for seed in args.seeds:
            (run_seed if args.trainer == "engine" else run_seed_verl)(seed, args)
    summary = summarize(args.split, args.trainer)
    before, after = summary["before"]["val/accuracy"], summary["after"]["val/accuracy"]
    print(f"\nsummary: benchmarks/results/{stem(args.trainer, args.split)}.json (seeds {summary['seeds']})")
    print(f"accuracy before: {before['mean']:.3f} +- {before['std']:.3f} after: {after['mean']:.3f} +- "
          f"{after['std']:.3f} ({before['n']} seeds)")


if __name__ == "__main__":
    main()
