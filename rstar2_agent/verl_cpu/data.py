"""Parquet files for verl's trainer from the shipped task lists (rstar2_agent/data/math_tasks_*.jsonl).

verl's `RLHFDataset` reads parquet rows; ours need the rStar2-Agent schema that data_preprocess/ writes
(`prompt` as chat messages, `reward_model.ground_truth`, `agent_name: rstar2_agent`). The CPU preset trains
on the procedurally generated arithmetic tasks that ship with the package, so no download is needed:

    python3 -m rstar2_agent.verl_cpu.data --out ~/data/rstar2-agent/cpu_math   # train, test, holdout .parquet

`test` is the dev split the CPU presets were tuned on; `holdout` is the untouched one that the learning
benchmarks (benchmarks/cpu_learning.py) validate on.

Rows hold the problem as the one user message, so the chat template writes its system turn with the tool
schema, as upstream's data. `--engine-system-prompt` puts the CPU engine's short system prompt first instead
(`rstar2_agent.engine.config.DEFAULT_SYSTEM_PROMPT`, one worked tool call, which SmolLM2-135M follows where it
does not read a schema), so verl's prompts open as `rstar2-agent train`'s do (verl's agent loop still lists the
tool schema after that text; the engine does not); `--system-prompt TEXT` puts any other text there.
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


def task_row(task: dict[str, Any], split: str, index: int, system_prompt: Optional[str] = None) -> dict[str, Any]:
    row = verl_row(DATA_SOURCE, split, index, task["problem"], str(task["answer"]), family=task.get("family", ""))
    if system_prompt:
        row["prompt"] = [{"role": "system", "content": system_prompt}, *row["prompt"]]
    return row


def read_tasks(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build(out_dir: str, limit: Optional[int] = None, system_prompt: Optional[str] = None) -> dict[str, str]:
    """Write `train.parquet`, `test.parquet` and `holdout.parquet` under out_dir (first `limit` tasks of each,
    `system_prompt` first in each prompt when given); returns {split: path}."""
    out = Path(os.path.expanduser(out_dir))
    paths = {}
    for split in ("train", "test", "holdout"):
        tasks = read_tasks(DATA_DIR / f"math_tasks_{split}.jsonl")[:limit]
        path = out / f"{split}.parquet"
        write_parquet([task_row(t, split, i, system_prompt) for i, t in enumerate(tasks)], str(path))
        paths[split] = str(path)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="~/data/rstar2-agent/cpu_math")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N tasks of each split")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--system-prompt", default=None, help="a system message before each problem")
    prompt.add_argument("--engine-system-prompt", action="store_true",
                        help="the CPU engine's system prompt (what `rstar2-agent train` shows SmolLM2-135M)")
    args = parser.parse_args(argv)
    system_prompt = args.system_prompt
    if args.engine_system_prompt:
        from rstar2_agent.engine.config import DEFAULT_SYSTEM_PROMPT

        system_prompt = DEFAULT_SYSTEM_PROMPT
    for split, path in build(args.out, args.limit, system_prompt).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
