"""A scripted CPU teacher for round 1 of self-evolution: a :class:`~.search.Generator` that writes step-format
solutions of the bundled task families (:mod:`rstar2_agent.data.math_tasks`), sometimes right and sometimes
realistically wrong, so a terminal-guided MCTS over it grows trees with both correct and wrong steps (upstream
bootstraps with a large model instead; on CPU this stands in for it).

It has the backends' interface, ``generate(prompts, n, params) -> list[list[Continuation]]``. Each prompt is
``question_prompt(...)`` + a partial solution (:mod:`.prompts`): the teacher finds the question (the *last*
text in the prompt that reads as a bundled family's question, so few-shot examples before it do not count),
reads the partial solution after it, and writes the next step, consistent with what is already there
(variable names are fixed per family, so a continuation builds on an earlier step's mistake rather than
silently repairing it):

======================  =============================================================================
partial solution        next step (text, stop string)
======================  =============================================================================
empty                   ``<code>\\n# Step 1: ...`` setting the numbers (``<end_of_step>``), or, at rate
                        ``direct``, a prose answer ``\\boxed{}`` without code (EOS: no stop string)
code block open         the next ``# Step k: ...`` computation (``<end_of_step>``), or after the last one
                        ``# Now print the final answer\\nprint(result)`` (``<end_of_code>``)
output seen             ``<answer>The answer is \\boxed{X}\\n`` with X read from the last ``<output>``
                        (``<end_of_answer>``); after an error output a fresh ``<code>`` block
======================  =============================================================================

Mistake rates (per generated step, :data:`MISTAKES`, each drawn independently):

* ``direct`` 0.15 at the first step: answer without code; that mental answer is right 1 time in 3, else
  off by a small amount;
* ``misread`` 0.05 at the first step: one number of the question copied off by one;
* ``wrong_op`` 0.15 per computation step: a family-specific realistic slip (off-by-one range bound, ``+``
  for ``*``, ``//`` for ``%``, ``lcm`` for ``gcd``, a prime test that stops one short, ...);
* ``code_error`` 0.08 per computation step: a misspelt name (the judge answers ``NameError``);
* ``transcribe`` 0.08 at the answer step: the printed value copied wrong (off by one or two digits swapped).

A single clean trace is thus right with probability about 0.85 * 0.95 * (0.77 ** steps) * 0.92 (+ the
rare right direct answer): about 0.57 for one computation step, 0.44 for two (divisors, primes_below). With
``temperature`` 0 the teacher makes no mistakes. Everything is seeded: the k-th continuation of a prompt
depends only on ``(seed, params["seed"], prompt, k)``, never on the batch it came in, so a search is
reproducible and resumable. A question of no bundled family raises ``ValueError``.

    >>> from rstar2_agent.math.prompts import question_prompt
    >>> t = ScriptedTeacher(seed=0)
    >>> p = question_prompt("What is 12 times 34?")
    >>> [c] = t.generate([p], 1, {"temperature": 0})[0]
    >>> c.text, c.stop_reason
    ('<code>\\n# Step 1: Write down the numbers\\na = 12\\nb = 34\\n', '<end_of_step>')
    >>> p += c.text + c.stop_reason + "\\n"
    >>> [c] = t.generate([p], 1, {"temperature": 0})[0]; c.text
    '# Step 2: Multiply them\\nresult = a * b\\n'
    >>> p += c.text + c.stop_reason + "\\n"
    >>> [c] = t.generate([p], 1, {"temperature": 0})[0]; c.text, c.stop_reason
    ('# Now print the final answer\\nprint(result)\\n', '<end_of_code>')
    >>> p += c.text + c.stop_reason + "\\n<output>408<end_of_output>\\n"
    >>> [c] = t.generate([p], 1, {"temperature": 0})[0]; c.text, c.stop_reason
    ('<answer>The answer is \\\\boxed{408}\\n', '<end_of_answer>')
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from rstar2_agent.math.steps import (ANSWER_END, ANSWER_START, CODE_END, CODE_START, OUTPUT_END, OUTPUT_START,
                                     STEP_END, Continuation, is_error_observation)

__all__ = ["MISTAKES", "Family", "FAMILIES", "find_question", "solve", "ScriptedTeacher"]

MISTAKES = {"direct": 0.15, "misread": 0.05, "wrong_op": 0.15, "code_error": 0.08, "transcribe": 0.08}


def _is_prime(k: int) -> bool:
    return k >= 2 and all(k % d for d in range(2, math.isqrt(k) + 1))


@dataclass(frozen=True)
class Family:
    """A bundled task family: its question pattern, the setup step (names for the numbers), the computation
    steps (comment, correct code, realistic wrong variants) and its answer."""

    pattern: str
    names: tuple[str, ...]
    steps: tuple[tuple[str, str, tuple[str, ...]], ...]
    answer: Callable[..., int]
    setup_prefix: str = ""


FAMILIES: dict[str, Family] = {
    "product": Family(
        r"What is (\d+) times (\d+)\?", ("a", "b"),
        (("Multiply them", "result = a * b", ("result = a + b", "result = a * (b - 1)")),),
        lambda a, b: a * b),
    "sum": Family(
        r"What is (\d+) \+ (\d+) - (\d+)\?", ("a", "b", "c"),
        (("Add the first two and subtract the third", "result = a + b - c",
          ("result = a - b + c", "result = a + b + c")),),
        lambda a, b, c: a + b - c),
    "range_sum": Family(
        r"What is the sum of all integers from (\d+) to (\d+), inclusive\?", ("start", "end"),
        (("Add up every integer in the range", "result = sum(range(start, end + 1))",
          ("result = sum(range(start, end))", "result = (start + end) * (end - start) // 2")),),
        lambda a, b: (a + b) * (b - a + 1) // 2),
    "mod_power": Family(
        r"What is the remainder when (\d+)\^(\d+) is divided by (\d+)\?", ("base", "exponent", "modulus"),
        (("Compute the power modulo the divisor", "result = pow(base, exponent, modulus)",
          ("result = pow(base, exponent - 1, modulus)", "result = (base * exponent) % modulus")),),
        lambda a, k, m: pow(a, k, m)),
    "divisors": Family(
        r"How many positive divisors does (\d+) have\?", ("n",),
        (("List the divisors", "divisors = [d for d in range(1, n + 1) if n % d == 0]",
          ("divisors = [d for d in range(1, n) if n % d == 0]", "divisors = [d for d in range(2, n) if n % d == 0]")),
         ("Count them", "result = len(divisors)", ("result = len(divisors) + 1",))),
        lambda n: sum(1 for d in range(1, n + 1) if n % d == 0)),
    "gcd": Family(
        r"What is the greatest common divisor of (\d+) and (\d+)\?", ("a", "b"),
        (("Use the Euclidean algorithm", "result = math.gcd(a, b)", ("result = math.lcm(a, b)", "result = a % b")),),
        lambda a, b: math.gcd(a, b), setup_prefix="import math\n"),
    "primes_below": Family(
        r"How many prime numbers are less than (\d+)\?", ("n",),
        (("Define a primality test", "def is_prime(k):\n    return k >= 2 and all(k % d for d in range(2, int(k ** 0.5) + 1))",
          ("def is_prime(k):\n    return k >= 2 and all(k % d for d in range(2, int(k ** 0.5)))",
           "def is_prime(k):\n    return all(k % d for d in range(2, int(k ** 0.5) + 1))")),
         ("Count the primes below n", "result = sum(1 for k in range(2, n) if is_prime(k))",
          ("result = sum(1 for k in range(2, n + 1) if is_prime(k))",))),
        lambda n: sum(1 for k in range(2, n) if _is_prime(k))),
    "remainder": Family(
        r"What is the remainder when (\d+) is divided by (\d+)\?", ("a", "b"),
        (("Take the remainder", "result = a % b", ("result = a // b", "result = b % a")),),
        lambda a, b: a % b),
}


def find_question(prompt: str) -> Optional[tuple[str, tuple[int, ...], int]]:
    """(family, numbers, end of the question in ``prompt``) of the last bundled-family question in the prompt.

    >>> find_question("Q: What is 2 times 3? ... Question: How many positive divisors does 12 have?\\n<code>")
    ('divisors', (12,), 76)
    """
    best = None
    for name, family in FAMILIES.items():
        for m in re.finditer(family.pattern, prompt):
            if best is None or m.start() > best[2]:
                best = (name, tuple(int(x) for x in m.groups()), m.start(), m.end())
    if best is None:
        return None
    return best[0], best[1], best[3]


def solve(question: str) -> int:
    """The right answer of a bundled-family question.

    >>> solve("What is the remainder when 26^33 is divided by 67?") == pow(26, 33, 67)
    True
    """
    found = find_question(question)
    if found is None:
        raise ValueError(f"not a question of a bundled task family: {question!r}")
    return FAMILIES[found[0]].answer(*found[1])


def _wrong_number(r: random.Random, value: int) -> int:
    """A realistic miscopy: off by one, or two adjacent digits swapped."""
    digits = str(abs(value))
    if len(digits) >= 2 and r.random() < 0.5:
        i = r.randrange(len(digits) - 1)
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
        if swapped != digits:
            return int(swapped) * (-1 if value < 0 else 1)
    return value + r.choice((-1, 1))


_LAST_NAME = re.compile(r"([A-Za-z_]\w*)(?=[^A-Za-z_]*$)")


def _misspell(code: str) -> str:
    """The step with its last name misspelt (``n`` -> ``n_``): a NameError when run."""
    return _LAST_NAME.sub(lambda m: m.group(1) + "_", code, count=1)


class ScriptedTeacher:
    """The scripted round-1 teacher (see the module docstring); ``mistakes`` overrides :data:`MISTAKES`."""

    def __init__(self, seed: int = 0, mistakes: Optional[dict] = None):
        self.seed = seed
        self.mistakes = {**MISTAKES, **(mistakes or {})}
        self.calls = 0
        self.generated_tokens = 0

    def generate(self, prompts: list[str], n: int, params: dict[str, Any]) -> list[list[Continuation]]:
        self.calls += 1
        greedy = float(params.get("temperature", 1.0)) == 0.0
        out = []
        for prompt in prompts:
            digest = hashlib.sha256(prompt.encode()).hexdigest()[:16]
            conts = []
            for k in range(n):
                r = random.Random(f"{self.seed}:{params.get('seed')}:{digest}:{k}")
                conts.append(self.step(prompt, r, greedy))
                self.generated_tokens += conts[-1].num_tokens
            out.append(conts)
        return out

    def _slip(self, r: random.Random, kind: str, greedy: bool) -> bool:
        return not greedy and r.random() < self.mistakes[kind]

    def step(self, prompt: str, r: random.Random, greedy: bool = False) -> Continuation:
        """The next step after ``prompt`` (question prompt + partial solution)."""
        found = find_question(prompt)
        if found is None:
            raise ValueError("scripted teacher: the prompt holds no question of a bundled task family")
        name, numbers, end = found
        family = FAMILIES[name]
        solution = prompt[end:]
        block = solution.rfind(CODE_START)
        output = solution.rfind(OUTPUT_END)
        if block < 0 or output > block:  # no code yet, or the last block has run
            if output >= 0:
                observed = solution[solution.rfind(OUTPUT_START, 0, output) + len(OUTPUT_START):output]
                if not is_error_observation(observed):
                    return self._answer(observed.strip(), r, greedy)
            return self._first(family, numbers, r, greedy)
        written = len(re.findall(r"^# Step \d+:", solution[block:], flags=re.M))  # setup step included
        if written <= len(family.steps):
            comment, code, wrong = family.steps[written - 1]
            if self._slip(r, "code_error", greedy):
                code = _misspell(code)
            elif self._slip(r, "wrong_op", greedy):
                code = r.choice(wrong)
            return self._cont(f"# Step {written + 1}: {comment}\n{code}\n", STEP_END)
        return self._cont("# Now print the final answer\nprint(result)\n", CODE_END)

    def _first(self, family: Family, numbers: tuple[int, ...], r: random.Random, greedy: bool) -> Continuation:
        if self._slip(r, "direct", greedy):
            truth = family.answer(*numbers)
            guess = truth if r.random() < 1 / 3 else _wrong_number(r, truth)
            # prose, ended by EOS (no stop string): the search keeps it beside the other samples, whereas a
            # continuation stopped on <end_of_answer> ends the expansion (upstream's rule, search.dedupe)
            return Continuation(f"Working it out directly, the answer is \\boxed{{{guess}}}.", None, 12)
        numbers = list(numbers)
        if self._slip(r, "misread", greedy):
            i = r.randrange(len(numbers))
            numbers[i] += r.choice((-1, 1))
        setup = "".join(f"{v} = {x}\n" for v, x in zip(family.names, numbers))
        return self._cont(f"{CODE_START}\n# Step 1: Write down the numbers\n{family.setup_prefix}{setup}", STEP_END)

    def _answer(self, observed: str, r: random.Random, greedy: bool) -> Continuation:
        value = observed.splitlines()[-1].strip() if observed else ""
        if re.fullmatch(r"-?\d+", value) and self._slip(r, "transcribe", greedy):
            value = str(_wrong_number(r, int(value)))
        return self._cont(f"{ANSWER_START}The answer is \\boxed{{{value}}}\n", ANSWER_END)

    @staticmethod
    def _cont(text: str, stop: str) -> Continuation:
        return Continuation(text, stop, max(1, len(text) // 4))  # about 4 characters per token
