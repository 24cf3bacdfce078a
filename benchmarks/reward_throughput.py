"""Reward verification throughput: RewardPool (worker processes) vs a plain loop in one process.

Builds a few hundred distinct, mixed (model response, ground truth) pairs: fractions, percents,
thousands separators, intervals, tuples, sets, units, degrees, symbolic expressions, responses with
tool output, wrong answers, a few slow ones (large polynomial identities, ~0.5 s each), two
pathological power towers (rejected fast by the size guard) and, with ``--limit-hitters N``, items
that run into math-verify's own 3 s limit (``(10^{7})!``). It scores them once with
``compute_score`` in a sequential loop and once with ``RewardPool``, checks both give the same scores,
and prints verifications per second and the ratio.

A long item that happens to come last leaves the other worker idle at the end, so one shuffle can
swing the ratio. The benchmark therefore runs several rounds, each with freshly drawn pairs
in a new order (seeds ``seed, seed+1, ...``), and reports the totals over all rounds.

Target: pool >= 1.8x the sequential loop on 2 cores, with zero hangs (no item hits the pool timeout,
every item returns).

    python3 benchmarks/reward_throughput.py [--pairs 300] [--rounds 3] [--workers N] [--timeout 10]
"""

from __future__ import annotations

import argparse
import os
import random
import time

from recorded import default_path, recorded

TARGET_RATIO = 1.8


def _fraction_pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 99), rng.choice([2, 4, 5, 8, 10, 20, 25])
    answer = rf"\dfrac{{{a}}}{{{b}}}" if rng.random() < 0.5 else rf"\frac{{{a * 3}}}{{{b * 3}}}"
    truth = f"{a / b:g}" if rng.random() < 0.8 else f"{(a + 1) / b:g}"
    return answer, truth


def _thousands_pair(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(1000, 9_999_999)
    return f"{n:,}", str(n if rng.random() < 0.8 else n + 1)


def _percent_pair(rng: random.Random) -> tuple[str, str]:
    p = rng.randint(1, 99)
    return rf"{p}\%", rng.choice([str(p), str(p), f"{p / 100:g}"])


def _interval_pair(rng: random.Random) -> tuple[str, str]:
    a, b = sorted(rng.sample(range(-50, 50), 2))
    left, right = rng.choice("[("), rng.choice("])")
    answer = rf"\left{left} {a}, {b} \right{right}"
    truth = f"{left}{a},{b}{right}" if rng.random() < 0.8 else f"{left}{a},{b + 1}{right}"
    return answer, truth


def _tuple_or_set_pair(rng: random.Random) -> tuple[str, str]:
    items = rng.sample(range(1, 60), 3)
    if rng.random() < 0.5:
        return rf"\{{{', '.join(map(str, items))}\}}", rf"\{{{','.join(map(str, sorted(items)))}\}}"
    shuffled = items if rng.random() < 0.7 else list(reversed(items))
    return f"({', '.join(map(str, items))})", f"({','.join(map(str, shuffled))})"


def _symbolic_pair(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(2, 30)
    if rng.random() < 0.5:
        return f"(x+{a})^2", f"x^2+{2 * a}x+{a * a}" if rng.random() < 0.8 else f"x^2+{a}x+{a * a}"
    b = rng.choice([2, 3, 5, 6, 7])
    return rf"\sqrt{{{a * a * b}}}", rf"{a}\sqrt{{{b}}}"


def _units_degrees_pair(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(1, 500)
    return rng.choice([(rf"{n}\text{{ cm}}^2", str(n)), (rf"{n}^\circ", str(n)), (rf"x = {n}", str(n)), (f"{n}.", str(n + 1))])


def _slow_pair(rng: random.Random) -> tuple[str, str]:
    k = rng.randint(55, 62)
    return rf"\frac{{x^{{{k}}}-1}}{{x-1}}", "+".join(f"x^{{{i}}}" for i in range(k))


MAKERS = [_fraction_pair, _thousands_pair, _percent_pair, _interval_pair, _tuple_or_set_pair, _symbolic_pair, _units_degrees_pair]


def _wrap(answer: str, rng: random.Random) -> str:
    """Embed a final answer in a response, sometimes after a tool call whose output holds another box."""
    if rng.random() < 0.3:
        return (
            "<reason>Let me compute this.\n<tool_call>\n{\"name\": \"python\"}\n</tool_call>"
            "<tool_response>\nstdout: \\boxed{999}\n</tool_response>\n"
            f"So the result is confirmed.</reason> <answer>\\boxed{{{answer}}}</answer>"
        )
    return f"<reason>Working it out step by step.</reason> <answer>The answer is \\boxed{{{answer}}}.</answer>"


def build_pairs(n: int, n_slow: int, seed: int, n_limit: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct mixed pairs in shuffled order: ``n_slow`` slow, 2 power towers, ``n_limit`` 3 s items."""
    rng = random.Random(seed)
    pairs = [_slow_pair(rng) for _ in range(n_slow)]
    pairs += [(r"9^{9^{9^{9}}}", "1"), (r"8^{8^{8^{8}}}", "2")]
    pairs += [(rf"({10 + k}^{{7}})!", "1") for k in range(n_limit)]
    while len(pairs) < n:
        pairs.append(rng.choice(MAKERS)(rng))
    rng.shuffle(pairs)
    return [(_wrap(answer, rng), truth) for answer, truth in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--slow", type=int, default=6, help="slow (~0.5 s) items among the pairs")
    parser.add_argument("--limit-hitters", type=int, default=0, help="items that hit math-verify's 3 s limit")
    parser.add_argument("--workers", type=int, default=None, help="pool processes (default: usable CPUs)")
    parser.add_argument("--timeout", type=float, default=10.0, help="pool per-item timeout, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with new pairs in a new order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=default_path(__file__), help="also write the output here ('': no)")
    args = parser.parse_args()
    with recorded(args.results):
        run(args)


def run(args) -> None:
    from rstar2_agent.reward import RewardPool, compute_score

    cores = len(os.sched_getaffinity(0))
    compute_score(r"\boxed{1}", "1")  # import/warm-up outside the timing, as the pool's workers do
    start = time.perf_counter()
    pool = RewardPool(num_workers=args.workers, timeout_s=args.timeout)
    pool.score_many([(r"\boxed{1}", "1")] * pool.num_workers)  # wait until every worker is ready
    startup_s = time.perf_counter() - start

    seq_s = pool_s = 0.0
    items = correct = mismatches = returned = 0
    with pool:
        for round_index in range(args.rounds):
            pairs = build_pairs(args.pairs, args.slow, args.seed + round_index, args.limit_hitters)
            start = time.perf_counter()
            sequential = [compute_score(s, t) for s, t in pairs]
            round_seq = time.perf_counter() - start
            start = time.perf_counter()
            pooled = pool.score_many(pairs)
            round_pool = time.perf_counter() - start
            print(f"round {round_index + 1}: sequential {round_seq:.2f}s, pool {round_pool:.2f}s, "
                  f"ratio {round_seq / round_pool:.2f}x")
            seq_s, pool_s = seq_s + round_seq, pool_s + round_pool
            items += len(pairs)
            returned += len(pooled)
            correct += int(sum(sequential))
            mismatches += sum(a != b for a, b in zip(sequential, pooled))
        stats = pool.stats

    ratio = seq_s / pool_s
    print(f"\n{args.rounds} rounds x {args.pairs} pairs ({args.slow} slow, 2 power towers, "
          f"{args.limit_hitters} hitting math-verify's limit per round), "
          f"{cores} usable cores, {correct}/{items} correct; pool start-up {startup_s:.2f}s (not timed)")
    print(f"{'mode':<26} {'items':>6} {'seconds':>9} {'verif/s':>9} {'timeouts':>9}")
    print(f"{'sequential (1 process)':<26} {items:>6} {seq_s:>9.2f} {items / seq_s:>9.1f} {'-':>9}")
    name = f"RewardPool ({pool.num_workers} workers)"
    print(f"{name:<26} {items:>6} {pool_s:>9.2f} {items / pool_s:>9.1f} {stats['timeouts']:>9}")
    print(f"ratio pool/sequential: {ratio:.2f}x (target >= {TARGET_RATIO}x); score mismatches: {mismatches}; "
          f"hangs (items not returned or hitting the pool timeout): {items - returned + stats['timeouts']}; "
          f"worker crashes: {stats['crashes']}")
    met = ratio >= TARGET_RATIO and stats["timeouts"] == 0 and mismatches == 0 and returned == items
    print(f"target met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
