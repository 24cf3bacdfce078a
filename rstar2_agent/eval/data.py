"""The problems `rstar2-agent eval` runs: the bundled task set, verl parquet rows, or question/answer json(l).

    load_items("bundled")                 # the bundled dev split (80); "bundled:holdout", "bundled:train" too
    load_items("~/data/rstar2-agent/aime2024/test.parquet")     # data_preprocess/ output (verl rows)
    load_items("aime.jsonl")              # upstream style: {"question", "answer"} (or {"problem", "answer"})

Rows are read by the CPU engine's loader (`rstar2_agent.engine.tasks`), question/answer items by the math
search's (`rstar2_agent.math.records.unwrap_item`). Each item keeps a `data_source` for the per-source report:
the verl row's `data_source`, the bundled task family (`bundled/<family>`), or the file's stem.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

__all__ = ["EvalItem", "load_items"]


@dataclasses.dataclass(frozen=True)
class EvalItem:
    index: int
    problem: str
    answer: str
    data_source: str


def load_items(spec: str, limit: Optional[int] = None) -> list[EvalItem]:
    """The items of `spec` (see the module docstring), the first `limit` when given."""
    from rstar2_agent.engine.tasks import _from_row, _read_rows, load_tasks

    if spec == "bundled" or spec.startswith("bundled:"):
        tasks = load_tasks(spec, "test")
        items = [EvalItem(i, t.problem, t.answer, f"bundled/{t.family}" if t.family else "bundled")
                 for i, t in enumerate(tasks)]
    else:
        from rstar2_agent.math.records import unwrap_item

        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist (use `bundled` for the shipped task set)")
        items = []
        for i, row in enumerate(_read_rows(path)):
            source = str(row.get("data_source") or path.stem)
            if "question" in row or isinstance(row.get("example"), dict):
                row = unwrap_item(row)
                if row.get("answer") is None:
                    raise ValueError(f"{path} row {i}: a question without an `answer`")
                items.append(EvalItem(i, str(row["question"]), str(row["answer"]), source))
            else:
                task = _from_row(row, f"{path} row {i}")
                items.append(EvalItem(i, task.problem, task.answer, source))
        if not items:
            raise ValueError(f"{path} has no rows")
    return items[:limit] if limit else items
