"""rStar-Math search throughput: lock-step batching against one question at a time, same config and seed.

Both runs search the same bundled problems (the held-out split) with the same policy, config and seed, through
the same private code judge. The in-process transformers backend seeds each sample from its prompt, so both
runs grow the same trees (checked: same node count) and the difference is only how the work is batched: the
lock-step run makes one generate call, one judge request and one PPM call per round for all questions, the
other one of each per round per question. It prints a table (nodes/s, tokens/s, judge calls/s, wall time)
and, last, `lock-step speed-up: X` (wall time of one-at-a-time over lock-step).

    python3 benchmarks/math_search.py [--model default|tiny|PATH] [--problems 16] [--custom_cfg cpu] [key=value ...]
    python3 benchmarks/math_search.py --backend vllm iterations=2     # vLLM's CPU build, one engine for both runs

`--model default` is the CPU default model (SmolLM2-135M-Instruct, prepared on first use); `tiny` is the
2-layer test model built in-process (a smoke run of this script, not a measurement). `--backend vllm` searches
with vLLM's offline engine (what `rstar2-agent math search` picks where vLLM runs), built once and used by
both runs with its prefix cache emptied in between. vLLM on CPU takes no per-request seed, so the two runs grow
different trees; the speed-up is then the ratio of nodes per second, and says so. Its weights are in the
search's `dtype` (default auto: bfloat16 on a CPU with AMX or AVX512-BF16, else float32; `dtype=float32`
overrides), named on the first line of the output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from recorded import default_path, recorded  # noqa: E402

from code_judge.local import LocalJudge  # noqa: E402
from rstar2_agent.math.backends import TransformersGenerator  # noqa: E402
from rstar2_agent.math.config import load_config  # noqa: E402
from rstar2_agent.math.evaluate import load_task  # noqa: E402
from rstar2_agent.math.executor import CodeJudgeExecutor  # noqa: E402
from rstar2_agent.math.search import SearchStats, run_search  # noqa: E402


def model_folder(model: str) -> str:
    if model == "default":
        from rstar2_agent.engine.models import prepare_default_model

        return prepare_default_model()
    return model


def load_generator(model: str, seed: int, backend: str = "transformers", dtype: str = "auto"):
    if backend == "vllm":
        from rstar2_agent.math.vllm_backend import VLLMGenerator

        return VLLMGenerator.from_pretrained(model_folder(model), seed=seed, max_model_len=4096, max_num_seqs=64,
                                             dtype=dtype)
    if model == "tiny":
        from rstar2_agent.engine.tiny import build_model, build_tokenizer

        tok = build_tokenizer()
        return TransformersGenerator(build_model(tok), tok, seed=seed)
    return TransformersGenerator.from_pretrained(model_folder(model), seed=seed)


def timed_run(items, cfg, generator, url) -> tuple[SearchStats, float, int]:
    """One search of ``items``, timed after a short warm-up generation (first calls pay one-off costs)."""
    generator.generate(["warm-up"], 1, {"temperature": 1.0, "max_tokens": 4, "stop": list(cfg.stop or [])})
    executor = CodeJudgeExecutor(url)
    stats = SearchStats()
    start = time.perf_counter()
    run_search(items, cfg, generator, executor, stats=stats)
    return stats, time.perf_counter() - start, executor.requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="default, tiny, or a model folder")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--custom_cfg", default="cpu")
    ap.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    ap.add_argument("--judge-workers", type=int, default=2)
    ap.add_argument("--results", default=default_path(__file__), help="results file ('' for none)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with recorded(args.results):
        items = load_task("bundled")[: args.problems]
        shared = None  # the vLLM engine, built once
        weights = ""
        if args.backend == "vllm":
            cfg = load_config(args.custom_cfg, args.overrides)
            shared = load_generator(args.model, cfg.seed or 0, "vllm", cfg.dtype)
            weights = f", weights {shared.dtype}"
        print(f"model {args.model} ({args.backend}{weights}), {len(items)} problems, config {args.custom_cfg} "
              f"{' '.join(args.overrides)}")
        print("| mode | wall s | rounds | nodes | nodes/s | tokens/s | judge calls | judge calls/s |")
        print("|---|---|---|---|---|---|---|---|", flush=True)
        rows = []
        with LocalJudge(workers=args.judge_workers) as judge:
            for name, batch in (("lock-step", -1), ("one at a time", 1)):
                cfg = load_config(args.custom_cfg, [*args.overrides, f"batch_size={batch}"])
                if shared is not None:
                    shared.llm.reset_prefix_cache()  # the second run must not reuse the first one's prefills
                    generator = shared
                else:
                    generator = load_generator(args.model, cfg.seed or 0)
                stats, wall, requests = timed_run(items, cfg, generator, judge.url)
                rows.append((name, stats, wall, requests))
                print(f"| {name} | {wall:.1f} | {stats.rounds} | {stats.nodes} | {stats.nodes / wall:.1f} | "
                      f"{stats.tokens / wall:.1f} | {requests} | {requests / wall:.2f} |", flush=True)
        (_, lock, lock_wall, _), (_, single, single_wall, _) = rows
        if lock.nodes == single.nodes:
            print(f"lock-step speed-up: {single_wall / lock_wall:.2f}")
        else:  # different trees (vLLM on CPU): compare the rate, not the wall time
            print(f"note: the runs grew different trees ({lock.nodes} vs {single.nodes} nodes); the speed-up is "
                  f"the ratio of nodes/s")
            print(f"lock-step speed-up: {(lock.nodes / lock_wall) / (single.nodes / single_wall):.2f}")


if __name__ == "__main__":
    main()
