"""Does one rStar-Math self-evolution round help on CPU? The default `rstar2-agent math evolve` preset, fixed
seed, one round, judged on problems no setting was tuned on.

It runs `rstar2-agent math evolve --rounds 1` in process (rstar2_agent/math/evolve_cli.py): the default CPU
model (SmolLM2-135M-Instruct) on the bundled task set's train split (320 problems), round 1 searched by the
scripted teacher (terminal-guided MCTS), then SFT of the policy on the extracted traces and PPM training on the
extracted pairs, and evaluation on the bundled `holdout` split (80 untouched problems): the starting model's
greedy pass@1 (round 0), the SFT policy's greedy, beam search + PPM and MCTS + PPM pass@1 (round 1), and the
PPM's pair accuracy on held-out pairs (pairs extracted from a teacher search of the held-out problems). Meant to
fit within 60 minutes on 2 cores.

    python3 benchmarks/cpu_self_evolution.py [--seed 0] [--out DIR] [--train-limit N] [--eval-limit N]
                                             [--model DIR] [--results FILE] [key=value ...]

`key=value` are `math evolve` overrides (`max_tokens=32`, `sft.max_steps=2`, ...). The run folder (default
/tmp/cpu_self_evolution) is emptied first unless `--resume`. Beside `--results` (default
benchmarks/results/cpu_self_evolution.txt) go the run's metrics (`.metrics.jsonl`) and plot (`.png`). The last
line reads `greedy before: A  greedy after: B  beam+ppm: C  mcts+ppm: D  ppm pair acc: E`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recorded import default_path, recorded  # noqa: E402


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/cpu_self_evolution", help="run folder")
    ap.add_argument("--model", default=None, help="starting policy (default: the default CPU model)")
    ap.add_argument("--train-limit", type=int, default=None, help="first N training problems (default: all 320)")
    ap.add_argument("--eval-limit", type=int, default=None, help="first N held-out problems (default: all 80)")
    ap.add_argument("--resume", action="store_true", help="keep the run folder and resume it")
    ap.add_argument("--logger", default="wandb", help="wandb (offline) or none")
    ap.add_argument("--results", default=default_path(__file__), help="results file ('' writes nothing)")
    ap.add_argument("overrides", nargs="*", help="math evolve overrides, key=value")
    args = ap.parse_args()

    from rstar2_agent.math.evolve_cli import add_arguments, run_evolve, summary_table

    out = Path(args.out)
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    evolve_args = argparse.ArgumentParser(add_help=False)
    add_arguments(evolve_args)
    argv = ["--rounds", "1", "--out", str(out), "--seed", str(args.seed), "--logger", args.logger]
    argv += ["--model", args.model] if args.model else []
    argv += ["--train-limit", str(args.train_limit)] if args.train_limit else []
    argv += ["--eval-limit", str(args.eval_limit)] if args.eval_limit else []
    ns = evolve_args.parse_args(argv + list(args.overrides))

    with recorded(args.results):
        started = time.perf_counter()
        scores = run_evolve(ns, log=lambda line: print(line, file=sys.stderr))
        wall = time.perf_counter() - started
        run = json.loads((out / "run.json").read_text())
        print(f"model {run['model']}, seed {args.seed}, {run['train_questions']} training / "
              f"{run['eval_questions']} held-out problems, 1 round, teacher {run['teacher']}"
              + (f", overrides {' '.join(args.overrides)}" if args.overrides else ""))
        phases = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        print("| round | phase | seconds | details |")
        print("|---|---|---|---|")
        for p in phases:
            details = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()
                       if k not in ("round", "phase", "seconds")}
            print(f"| {p['round']} | {p['phase']} | {p.get('seconds', '-')} | {json.dumps(details)} |")
        print(summary_table(scores))
        print(f"wall time: {wall / 60:.1f} min")
        if args.results:
            base = Path(args.results).with_suffix("")
            shutil.copy(out / "metrics.jsonl", f"{base}.metrics.jsonl")
            shutil.copy(out / "evolve.png", f"{base}.png")
        before, after = scores.get(0, {}), scores.get(1, {})
        print(f"greedy before: {fmt(before.get('greedy'))}  greedy after: {fmt(after.get('greedy'))}  "
              f"beam+ppm: {fmt(after.get('beam_ppm'))}  mcts+ppm: {fmt(after.get('mcts_ppm'))}  "
              f"ppm pair acc: {fmt(after.get('ppm_pair_acc'))}")


if __name__ == "__main__":
    main()
