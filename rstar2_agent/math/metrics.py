"""Scores of search outputs, drop-in for upstream's ``eval_output.py`` and ``eval_maj.py``.

* One run (one output file): each question's answer is its valid terminal with the highest Q
  (:func:`best_terminal`); pass@1 is the share of questions where it is correct.
* Several runs of the same questions: each run gives its best (answer, Q) per question; the ``top_n``
  (default 4) best-valued of them are kept, and the report gives

  - ``pass@1``: the top-valued answer is correct;
  - ``pass@n``: any kept answer is correct;
  - ``majority``: the most frequent kept answer (equal answers grouped with our reward's equivalence check;
    ties broken at random with ``seed``, as upstream) is correct;
  - ``weighted_majority``: the answer group with the largest sum of Q values is correct.

Worked example, ground truth 4, three runs' best answers ``4`` (Q 0.9), ``5`` (0.95), ``4`` (0.2):
top_n 2 keeps 5 and the first 4, so pass@1 0 (5 is on top), pass@n 1, weighted majority picks 5 (0.95 > 0.9);
top_n 3 keeps all: majority and weighted majority pick 4 (2 votes; 1.1 > 0.95).
"""

from __future__ import annotations

import random
from typing import Any, Optional, Sequence

from rstar2_agent.math.search import is_correct
from rstar2_agent.math.steps import FAILURE_ANSWERS

__all__ = ["valid_terminals", "best_terminal", "pass_at_1", "group_answers", "vote", "multi_run_report",
           "rollout_metrics"]


def _tag_key(tag: str) -> list[int]:
    return [int(p) for p in tag.split(".")]


def valid_terminals(record: dict) -> list[tuple[str, float]]:
    """(final answer, Q) of each node holding a real answer, in tag order."""
    nodes = record["rstar"]
    return [(nodes[t]["final_answer"], float(nodes[t].get("q_value", 0.0)))
            for t in sorted(nodes, key=_tag_key)
            if nodes[t].get("final_answer") and nodes[t]["final_answer"] not in FAILURE_ANSWERS]


def best_terminal(record: dict) -> Optional[tuple[str, float]]:
    """The valid terminal with the highest Q (the first one on a tie), or None."""
    best = None
    for answer, q in valid_terminals(record):
        if best is None or q > best[1]:
            best = (answer, q)
    return best


def pass_at_1(records: Sequence[dict]) -> float:
    """Share of records whose best terminal is correct (no answer counts as wrong)."""
    if not records:
        return 0.0
    hits = 0
    for rec in records:
        best = best_terminal(rec)
        hits += bool(best and is_correct(best[0], rec.get("answer")))
    return hits / len(records)


def group_answers(answers: Sequence[str]) -> list[list[int]]:
    """Indices of equivalent answers grouped together (first-seen order), by our reward's equivalence."""
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        for group in groups:
            if answers[group[0]] == answer or is_correct(answer, answers[group[0]]):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def vote(answers: Sequence[str], weights: Sequence[float], rng: random.Random) -> Optional[str]:
    """The answer of the group with the largest total weight; ties broken with ``rng``."""
    if not answers:
        return None
    groups = group_answers(answers)
    totals = [sum(weights[i] for i in g) for g in groups]
    top = max(totals)
    winners = [g for g, t in zip(groups, totals) if abs(t - top) < 1e-12]
    return answers[rng.choice(winners)[0]]


def multi_run_report(runs: Sequence[Sequence[dict]], top_n: int = 4, seed: int = 0) -> dict[str, Any]:
    """Upstream ``eval_maj.py`` metrics over several runs (lists of records), matched by question."""
    rng = random.Random(seed)
    by_question: dict[str, list[tuple[str, float]]] = {}
    truth: dict[str, Any] = {}
    for run in runs:
        for rec in run:
            q = str(rec["question"])
            truth[q] = rec.get("answer")
            best = best_terminal(rec)
            if best is not None:
                by_question.setdefault(q, []).append(best)
    counts = {"pass@1": 0, "pass@n": 0, "majority": 0, "weighted_majority": 0}
    for q, gt in truth.items():
        kept = sorted(by_question.get(q, []), key=lambda a: a[1], reverse=True)[:top_n]
        if not kept:
            continue
        answers = [a for a, _ in kept]
        counts["pass@1"] += is_correct(answers[0], gt)
        counts["pass@n"] += any(is_correct(a, gt) for a in answers)
        majority = vote(answers, [1.0] * len(answers), rng)
        weighted = vote(answers, [v for _, v in kept], rng)
        counts["majority"] += majority is not None and is_correct(majority, gt)
        counts["weighted_majority"] += weighted is not None and is_correct(weighted, gt)
    total = len(truth)
    return {"questions": total, "runs": len(runs), "top_n": top_n,
            **{k: (v / total if total else 0.0) for k, v in counts.items()}}


def rollout_metrics(per_question: Sequence[tuple[Any, Sequence[Sequence[tuple[str, float]]]]]) -> list[dict]:
    """Upstream's ``intermediate_metric``: after each rollout k, pass@1 (the best-Q answer so far is correct)
    and pass@n (some answer so far is correct) over the questions.

    ``per_question`` holds (ground truth, the answers after each rollout); a question that stopped early (its
    tree exhausted) keeps its last answers for the later rollouts.
    """
    rollouts = max((len(r) for _, r in per_question), default=0)
    out = []
    for k in range(rollouts):
        best_hits = any_hits = 0
        for truth, answers_by_rollout in per_question:
            if not answers_by_rollout:
                continue
            answers = answers_by_rollout[min(k, len(answers_by_rollout) - 1)]
            if not answers:
                continue
            best = max(answers, key=lambda a: a[1])  # the first on a tie
            best_hits += is_correct(best[0], truth)
            any_hits += any(is_correct(a, truth) for a, _ in answers)
        n = len(per_question)
        out.append({"rollout": k + 1, "pass@1": best_hits / n if n else 0.0, "pass@n": any_hits / n if n else 0.0})
    return out
