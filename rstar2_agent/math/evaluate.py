"""Evaluation task files: upstream's task names read from a user-supplied ``eval_data`` folder, plus ``bundled``.

Upstream ``eval.py`` evaluates on gsm8k, math, math500, aime2024, amc23, collegemath, gaokao2023en,
olympiadbench and omni-math, each a question/answer file in its ``eval_data/`` folder. We ship none of them
(licences differ); ``--data-dir`` points at your copy, and a task's file is the first of
``<dir>/<task>.jsonl``, ``<dir>/<task>.json``, ``<dir>/<task>/test.jsonl``, ``<dir>/<task>/test.json``.
``bundled`` is our own held-out split (``rstar2_agent/data/math_tasks_holdout.jsonl``), always available.
"""

from __future__ import annotations

from pathlib import Path

from rstar2_agent.data.math_tasks import load as load_bundled
from rstar2_agent.math.records import load_questions

__all__ = ["UPSTREAM_TASKS", "TASKS", "task_candidates", "load_task"]

UPSTREAM_TASKS = ("gsm8k", "math", "math500", "aime2024", "amc23", "collegemath", "gaokao2023en", "olympiadbench",
                  "omni-math")
TASKS = UPSTREAM_TASKS + ("bundled",)


def task_candidates(task: str, data_dir: str | Path) -> list[Path]:
    """The files a task may be in, in the order they are tried."""
    root = Path(data_dir)
    return [root / f"{task}.jsonl", root / f"{task}.json", root / task / "test.jsonl", root / task / "test.json"]


def load_task(task: str, data_dir: str | Path = "eval_data") -> list[dict]:
    """The question/answer items of a task."""
    if task == "bundled":
        return [{"question": r["problem"], "answer": r["answer"], "family": r["family"]}
                for r in load_bundled("holdout")]
    if task not in UPSTREAM_TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    for path in task_candidates(task, data_dir):
        if path.is_file():
            return load_questions(path)
    tried = ", ".join(str(p) for p in task_candidates(task, data_dir))
    raise FileNotFoundError(f"no file for task {task!r} (tried {tried}); pass --data-dir with your eval_data copy")
