"""The bundled math task set for `rstar2-agent train` on CPU: integer-answer problems a small model can
partly solve by itself and solve more often with the Python tool (big products, modular powers, divisor
counts, ...), in verl's row layout.

Deterministic: `generate(n, seed)` always gives the same problems; the shipped splits are
`python3 -m rstar2_agent.data.math_tasks` (none shares a problem with another):
- `train`: seed 0, 320 rows;
- `test`: seed 1, 80 rows, the dev set: the CPU preset (families, temperature, learning rate, prompts per step,
  cold-start length) was tuned while watching accuracy on it, so a gain measured there is selected;
- `holdout`: seed 2, 80 rows, untouched: no setting was chosen by looking at it. The learning benchmark reports
  on it. Its problems come from the same eight families as training, with new numbers.

    >>> row = generate(1, seed=3)[0]
    >>> sorted(row) == ["answer", "family", "problem"] and row["answer"].lstrip("-").isdigit()
    True
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from importlib import resources
from pathlib import Path
from typing import Callable

Task = tuple[str, int]


def _product(r: random.Random) -> Task:
    a, b = r.randint(12, 999), r.randint(12, 999)
    return f"What is {a} times {b}?", a * b


def _sum(r: random.Random) -> Task:
    a, b, c = r.randint(1, 99), r.randint(1, 99), r.randint(1, 99)
    return f"What is {a} + {b} - {c}?", a + b - c


def _range_sum(r: random.Random) -> Task:
    a = r.randint(1, 50)
    b = a + r.randint(10, 400)
    return f"What is the sum of all integers from {a} to {b}, inclusive?", (a + b) * (b - a + 1) // 2


def _mod_power(r: random.Random) -> Task:
    a, k, m = r.randint(2, 30), r.randint(5, 60), r.randint(7, 97)
    return f"What is the remainder when {a}^{k} is divided by {m}?", pow(a, k, m)


def _divisors(r: random.Random) -> Task:
    n = r.randint(12, 2000)
    return f"How many positive divisors does {n} have?", sum(1 for d in range(1, n + 1) if n % d == 0)


def _gcd(r: random.Random) -> Task:
    g = r.randint(2, 40)
    a, b = g * r.randint(2, 60), g * r.randint(2, 60)
    return f"What is the greatest common divisor of {a} and {b}?", math.gcd(a, b)


def _primes_below(r: random.Random) -> Task:
    n = r.randint(10, 500)
    return f"How many prime numbers are less than {n}?", sum(1 for k in range(2, n) if _is_prime(k))


def _remainder(r: random.Random) -> Task:
    a, b = r.randint(100, 99999), r.randint(3, 97)
    return f"What is the remainder when {a} is divided by {b}?", a % b


def _is_prime(k: int) -> bool:
    return k >= 2 and all(k % d for d in range(2, math.isqrt(k) + 1))


FAMILIES: dict[str, Callable[[random.Random], Task]] = {
    "product": _product, "sum": _sum, "range_sum": _range_sum, "mod_power": _mod_power,
    "divisors": _divisors, "gcd": _gcd, "primes_below": _primes_below, "remainder": _remainder,
}


# One short program per family that prints the answer: the cold-start demonstrations call the tool with it.
PROGRAMS: dict[str, str] = {
    "product": "print({0} * {1})",
    "sum": "print({0} + {1} - {2})",
    "range_sum": "print(sum(range({0}, {1} + 1)))",
    "mod_power": "print(pow({0}, {1}, {2}))",
    "divisors": "print(sum(1 for d in range(1, {0} + 1) if {0} % d == 0))",
    "gcd": "import math\nprint(math.gcd({0}, {1}))",
    "primes_below": "print(sum(1 for k in range(2, {0}) if all(k % d for d in range(2, k))))",
    "remainder": "print({0} % {1})",
}


def reference_program(row: dict) -> str:
    """A Python program that prints the row's answer, from the numbers in its problem text.

    >>> reference_program({"problem": "What is the remainder when 26^33 is divided by 67?", "family": "mod_power"})
    'print(pow(26, 33, 67))'
    """
    return PROGRAMS[row["family"]].format(*re.findall(r"\d+", row["problem"]))


def generate(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """`n` distinct problems, families in turn, none of whose texts is in `exclude`."""
    r = random.Random(seed)
    names = list(FAMILIES)
    rows, seen = [], set(exclude)
    while len(rows) < n:
        family = names[len(rows) % len(names)]
        problem, answer = FAMILIES[family](r)
        if problem in seen:
            continue
        seen.add(problem)
        rows.append({"problem": problem, "answer": str(answer), "family": family})
    return rows


SPLITS = ("train", "test", "holdout")


def splits() -> dict[str, list[dict]]:
    train = generate(320, seed=0)
    test = generate(80, seed=1, exclude={row["problem"] for row in train})
    holdout = generate(80, seed=2, exclude={row["problem"] for row in train + test})
    return {"train": train, "test": test, "holdout": holdout}


def load(split: str) -> list[dict]:
    """The shipped split ("train", "test" (the dev set) or "holdout")."""
    if split not in SPLITS:
        raise ValueError(f"no bundled split {split!r}: use one of {', '.join(SPLITS)}")
    text = resources.files("rstar2_agent.data").joinpath(f"math_tasks_{split}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def main() -> None:
    ap = argparse.ArgumentParser(description="write the bundled math task splits")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    for name, rows in splits().items():
        path = Path(args.out) / f"math_tasks_{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{path}: {len(rows)} problems")


if __name__ == "__main__":
    main()
