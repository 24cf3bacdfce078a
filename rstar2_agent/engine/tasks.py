"""The problems a CPU run trains and validates on: the bundled task set, or a verl parquet/jsonl.

    load_tasks("bundled", "train")              # rstar2_agent/data/math_tasks_train.jsonl (320 problems)
    load_tasks("bundled", "test")               # the dev set (80), what validation uses by default
    load_tasks("bundled:holdout", "test")       # the untouched split (80): a named split wins over `split`
    load_tasks("~/data/rstar2-agent/aime2024_rstar2_agent_loop.parquet", "test")

A verl row (what `data_preprocess/` writes) gives its last user message as the problem and
`reward_model.ground_truth` as the answer; a plain `{"problem", "answer"}` row works as well.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Optional

from rstar2_agent.data import math_tasks


@dataclasses.dataclass(frozen=True)
class Task:
    problem: str
    answer: str
    family: Optional[str] = None  # the bundled task family (it has a reference program), else None


def _from_row(row: dict, where: str) -> Task:
    if "problem" in row and "answer" in row:
        return Task(str(row["problem"]), str(row["answer"]), row.get("family"))
    prompt, reward = row.get("prompt"), row.get("reward_model") or {}
    users = [m.get("content") for m in (list(prompt) if prompt is not None else []) if m.get("role") == "user"]
    if not users or reward.get("ground_truth") is None:
        raise ValueError(f"{where}: a row needs `problem` and `answer`, or verl's `prompt` (with a user message) "
                         f"and `reward_model.ground_truth`; got keys {sorted(row)}")
    return Task(str(users[-1]), str(reward["ground_truth"]))


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def step_indices(step: int, batch_size: int, n: int, seed: int, shuffle: bool = True) -> list[int]:
    """The task indices of training step `step` (1-based): epochs of seeded permutations of range(n), read in
    order, so a run resumed at any step sees exactly the prompts an uninterrupted run would have.

    >>> step_indices(1, 3, 4, seed=0, shuffle=False), step_indices(2, 3, 4, seed=0, shuffle=False)
    ([0, 1, 2], [3, 0, 1])
    >>> sorted(step_indices(1, 4, 4, seed=7)) == [0, 1, 2, 3]     # one epoch: each task once
    True
    """
    out = []
    for position in range((step - 1) * batch_size, step * batch_size):
        epoch, index = divmod(position, n)
        order = list(range(n))
        if shuffle:
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(order[index])
    return out


def load_tasks(spec: str, split: str) -> list[Task]:
    if spec == "bundled" or spec.startswith("bundled:"):
        name = spec.partition(":")[2] or split
        return [_from_row(row, f"bundled:{name}") for row in math_tasks.load(name)]
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist (use `bundled` for the shipped task set)")
    tasks = [_from_row(row, f"{path} row {i}") for i, row in enumerate(_read_rows(path))]
    if not tasks:
        raise ValueError(f"{path} has no rows")
    return tasks
