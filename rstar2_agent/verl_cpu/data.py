"""Parquet files for verl's trainer from the shipped task lists (rstar2_agent/data/math_tasks_*.jsonl).

verl's `RLHFDataset` reads parquet rows; ours need the rStar2-Agent schema that data_preprocess/ writes
(`prompt` as chat messages, `reward_model.ground_truth`, `agent_name: rstar2_agent`). The CPU preset trains
on the procedurally generated arithmetic tasks that ship with the package, so no download is needed:

    python3 -m rstar2_agent.verl_cpu.data --out ~/data/rstar2-agent/cpu_math   # train.parquet, test.parquet
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Optional

from rstar2_agent.data.rows import verl_row, write_parquet

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DATA_SOURCE = "rstar_cpu_math_tasks"


def task_row(task: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    return verl_row(DATA_SOURCE, split, index, task["problem"], str(task["answer"]), family=task.get("family", ""))


def read_tasks(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build(out_dir: str, limit: Optional[int] = None) -> dict[str, str]:
    """Write `train.parquet` and `test.parquet` under out_dir (first `limit` tasks of each); returns paths."""
    out = Path(os.path.expanduser(out_dir))
    paths = {}
    for split, name in (("train", "math_tasks_train.jsonl"), ("test", "math_tasks_test.jsonl")):
        tasks = read_tasks(DATA_DIR / name)[:limit]
        path = out / f"{split}.parquet"
        write_parquet([task_row(t, split, i) for i, t in enumerate(tasks)], str(path))
        paths[split] = str(path)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="~/data/rstar2-agent/cpu_math")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N tasks of each split")
    args = parser.parse_args(argv)
    for split, path in build(args.out, args.limit).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
