"""verl dataset rows in the rStar2-Agent schema, and writing them as parquet: one implementation for the
data_preprocess scripts (public data sets) and the CPU preset's bundled task set (rstar2_agent.verl_cpu.data).

    data_source  e.g. "rstar_" + <Hugging Face dataset id>
    prompt       [{"role": "user", "content": <problem text, unchanged>}]   (the chat template adds the rest)
    ability      "math"
    reward_model {"style": "rule", "ground_truth": <answer as a string>}
    extra_info   {"split", "index", "answer", "question", "need_tools_kwargs": False,
                  "interaction_kwargs": {"query", "ground_truth"}, and any extra fields given}
    agent_name   "rstar2_agent"                                          (selects our verl agent loop)
"""

from __future__ import annotations

import os
from typing import Any, Iterable

AGENT_NAME = "rstar2_agent"
ABILITY = "math"
REWARD_STYLE = "rule"


def verl_row(data_source: str, split: str, index: int, question: str, answer: str, **extra_info: Any) -> dict:
    """One row.

    >>> verl_row("rstar_x", "train", 3, "1+1?", "2")["extra_info"]["interaction_kwargs"]
    {'query': '1+1?', 'ground_truth': '2'}
    """
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": question}],
        "ability": ABILITY,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": answer},
        "extra_info": {"split": split, "index": index, "answer": answer, "question": question, **extra_info,
                       "need_tools_kwargs": False, "interaction_kwargs": {"query": question, "ground_truth": answer}},
        "agent_name": AGENT_NAME,
    }


def write_parquet(rows: Iterable[dict[str, Any]], path: str) -> None:
    """Write rows to `path` through a temporary file, so a half-written file never stands under the final name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    os.replace(tmp, path)
