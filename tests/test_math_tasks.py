"""The bundled CPU-training task set: reproducible, disjoint splits, and every answer right (checked with sympy)."""

import re

import pytest
import sympy

from rstar2_agent.data.math_tasks import FAMILIES, load, splits
from rstar2_agent.reward import compute_score


def expected(row) -> int:
    """An independent computation of the answer from the problem text."""
    n = [int(x) for x in re.findall(r"\d+", row["problem"])]
    return {
        "product": lambda: n[0] * n[1],
        "sum": lambda: n[0] + n[1] - n[2],
        "range_sum": lambda: sum(range(n[0], n[1] + 1)),
        "mod_power": lambda: int(sympy.Mod(sympy.Integer(n[0]) ** n[1], n[2])),
        "divisors": lambda: int(sympy.divisor_count(n[0])),
        "gcd": lambda: int(sympy.gcd(n[0], n[1])),
        "primes_below": lambda: int(sympy.primepi(n[0] - 1)),
        "remainder": lambda: n[0] % n[1],
    }[row["family"]]()


@pytest.mark.parametrize("split", ["train", "test", "holdout"])
def test_shipped_splits_are_the_generated_ones_and_correct(split):
    rows = load(split)
    assert rows == splits()[split]
    assert [r for r in rows if int(r["answer"]) != expected(r)] == []
    assert {r["family"] for r in rows} == set(FAMILIES)
    assert compute_score(f"so \\boxed{{{rows[0]['answer']}}}", rows[0]["answer"]) == 1.0


def test_splits_are_disjoint_and_sized():
    train, test, holdout = load("train"), load("test"), load("holdout")
    assert (len(train), len(test), len(holdout)) == (320, 80, 80)
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    assert not {r["problem"] for r in holdout} & {r["problem"] for r in train + test}
    assert len({r["problem"] for r in train}) == 320


def test_an_unknown_split_is_refused_by_name():
    with pytest.raises(ValueError, match="holdout"):
        load("dev")
