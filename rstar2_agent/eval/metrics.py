"""Evaluation metrics as pure functions of finished trajectory records (the dicts `rstar2-agent eval` writes).

Per problem, over its n samples (`scores[k]` is 1.0 or 0.0 from `compute_score`, `answers[k]` the last boxed
answer of sample k, None when it boxed nothing):

* avg@n: the mean score of the n samples (what rStar2-Agent reports as avg@n); over problems, the mean.
* pass@n: 1 when any sample scores 1, else 0.
* maj@n: the score of the most frequent answer. Answers are grouped by `normalize_answer` (the reward's own
  normaliser, so `\\frac{1}{2}` and `\\dfrac12` vote together); samples with no answer do not vote. **Tie
  rule:** when several answers share the top count, maj@n is the fraction of the tied answers that are correct
  (the expected score of a uniformly random tie-break), so it never depends on sample order. An answer group's
  correctness is the score of its first sample (every sample of a group has the same boxed answer up to
  normalisation, hence the same score). No answer at all gives 0.

    >>> maj_at_n(["3", "4", "4", None], [0.0, 1.0, 1.0, 0.0])
    1.0
    >>> maj_at_n(["3", "4"], [0.0, 1.0])         # a 1-1 tie, one of the two tied answers is right
    0.5
    >>> avg_at_n([1.0, 0.0, 0.0, 1.0]), pass_at_n([0.0, 0.0]), pass_at_n([0.0, 1.0])
    (0.5, 0.0, 1.0)

Trajectory numbers, over all trajectories the sandbox did not fail (`infra_error`):
mean tool calls per trajectory, tool-error ratio ((tool errors + malformed calls) / (calls + malformed calls),
as the trainer's `trajectory_metrics`), mean response length (tokens of the whole response, tool turns included)
and the count of each finish reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

__all__ = ["avg_at_n", "pass_at_n", "maj_at_n", "problem_metrics", "summarize", "ALL"]

ALL = "all"


def avg_at_n(scores: Sequence[float]) -> float:
    """Mean score of one problem's samples (0 for none)."""
    return float(sum(scores) / len(scores)) if scores else 0.0


def pass_at_n(scores: Sequence[float]) -> float:
    """1.0 when any sample is correct."""
    return 1.0 if any(s >= 1.0 for s in scores) else 0.0


def _normalize(answer: str) -> str:
    from rstar2_agent.reward.normalize import normalize_answer

    try:
        return normalize_answer(answer)
    except Exception:  # noqa: BLE001 - a strange answer still votes, as itself
        return answer.strip()


def maj_at_n(answers: Sequence[Optional[str]], scores: Sequence[float]) -> float:
    """Majority-vote score of one problem (see the module docstring for grouping and the tie rule)."""
    if len(answers) != len(scores):
        raise ValueError("answers and scores must have one entry per sample")
    votes: Counter = Counter()
    correct: dict[str, float] = {}
    for answer, score in zip(answers, scores):
        if answer is None or not str(answer).strip():
            continue
        key = _normalize(str(answer))
        votes[key] += 1
        correct.setdefault(key, 1.0 if score >= 1.0 else 0.0)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [key for key, count in votes.items() if count == top]
    return sum(correct[key] for key in tied) / len(tied)


def problem_metrics(records: Sequence[dict]) -> dict[str, float]:
    """avg@n, pass@n and maj@n of one problem's sample records (`score`, `answer`)."""
    scores = [float(r["score"]) for r in records]
    answers = [r.get("answer") for r in records]
    return {"avg": avg_at_n(scores), "pass": pass_at_n(scores), "maj": maj_at_n(answers, scores)}


def _block(records: list[dict], n: int) -> dict:
    by_problem: dict = defaultdict(list)
    for r in records:
        by_problem[r["problem_index"]].append(r)
    per_problem = [problem_metrics(rs) for rs in by_problem.values()]
    count = len(per_problem)
    calls = sum(int(r.get("tool_calls", 0)) for r in records)
    malformed = sum(int(r.get("parse_errors", 0)) for r in records)
    errors = sum(int(r.get("tool_errors", 0)) for r in records) + malformed
    mean = (lambda xs: float(sum(xs) / len(xs)) if xs else 0.0)
    return {
        "problems": count,
        "trajectories": len(records),
        f"avg@{n}": mean([p["avg"] for p in per_problem]),
        f"pass@{n}": mean([p["pass"] for p in per_problem]),
        f"maj@{n}": mean([p["maj"] for p in per_problem]),
        "tool_calls_per_traj": calls / len(records) if records else 0.0,
        "tool_error_ratio": errors / (calls + malformed) if calls + malformed else 0.0,
        "response_length": mean([int(r.get("response_length", 0)) for r in records]),
        "finish_reasons": dict(sorted(Counter(str(r.get("finish_reason", "")) for r in records).items())),
    }


def summarize(records: Iterable[dict], n: int) -> dict:
    """The report over finished records: `{"all": {...}, "by_source": {source: {...}}, "infra_errors": k}`.

    Records with `infra_error` (the sandbox failed, not the model) are counted, not scored."""
    records = list(records)
    good = [r for r in records if not r.get("infra_error")]
    sources: dict = defaultdict(list)
    for r in good:
        sources[str(r.get("data_source") or "unknown")].append(r)
    return {ALL: _block(good, n), "by_source": {s: _block(rs, n) for s, rs in sorted(sources.items())},
            "infra_errors": len(records) - len(good)}
