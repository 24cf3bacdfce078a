"""An eval's output folder, and resuming from it.

    <output>/trajectories.jsonl   one line per finished (problem, sample), appended and flushed as each finishes
    <output>/summary.json         the report (`rstar2_agent.eval.metrics.summarize`) and the run's settings
    <output>/config.json          the settings of the first run into the folder

A rerun into the same folder skips the (problem, sample) pairs already there, so an interrupted eval (Ctrl-C,
a dead server, a kill) continues where it stopped; a last line cut by a kill is ignored and that pair run again,
and so is a trajectory the sandbox failed (`infra_error`). A line whose problem text differs from the data's
problem at that index means another data set was run into the folder, which is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from rstar2_agent.eval.data import EvalItem
from rstar2_agent.eval.metrics import ALL
from rstar2_agent.math.records import append_record, read_records  # a cut last line is skipped

__all__ = ["RunFolder", "read_records", "format_table"]

#: settings that must match for a rerun to resume (n may grow: more samples are added)
SAME_ON_RESUME = ("data", "model", "temperature", "top_p", "max_tokens", "max_turns", "system_prompt")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.trajectories = self.path / "trajectories.jsonl"
        self.summary = self.path / "summary.json"
        self.config = self.path / "config.json"

    def check_config(self, config: dict) -> list[str]:
        """Write `config` on a first run; on a rerun, the differences that matter (empty: resume is safe)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.config.exists():
            self.config.write_text(json.dumps(config, indent=2) + "\n")
            return []
        old = json.loads(self.config.read_text())
        return [f"{key}: {old.get(key)!r} before, {config.get(key)!r} now" for key in SAME_ON_RESUME
                if key in old and old.get(key) != config.get(key)]

    def finished(self, items: Sequence[EvalItem], n: int) -> dict[tuple[int, int], dict]:
        """The records of the pairs already done, by (problem index, sample), for these items and samples < n."""
        by_index = {item.index: item for item in items}
        done: dict[tuple[int, int], dict] = {}
        for r in read_records(self.trajectories):
            item = by_index.get(r.get("problem_index"))
            if item is None or int(r.get("sample", -1)) >= n or r.get("infra_error"):
                continue
            if r.get("problem") != item.problem:
                raise ValueError(f"{self.trajectories} holds another problem at index {item.index} "
                                 f"({str(r.get('problem'))[:60]!r}): another data set was run into this folder; "
                                 f"use a new --output")
            done[(item.index, int(r["sample"]))] = r
        return done

    def append(self, record: dict) -> None:
        append_record(self.trajectories, record)

    def write_summary(self, summary: dict) -> None:
        tmp = self.summary.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(self.summary)


def format_table(report: dict, n: int) -> str:
    """The console table: one row per data source, then all (see `rstar2_agent.eval.metrics.summarize`)."""
    head = ["source", "problems", "trajs", f"avg@{n}", f"pass@{n}", f"maj@{n}", "tool calls", "tool err",
            "resp len", "finish reasons"]
    rows = [[name, *_cells(block, n)] for name, block in report["by_source"].items()]
    if len(rows) != 1:
        rows.append([ALL, *_cells(report[ALL], n)])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    if report.get("infra_errors"):
        out.append(f"({report['infra_errors']} trajectories the code judge failed are not scored)")
    return "\n".join(out)


def _cells(block: dict, n: int) -> list:
    reasons = ", ".join(f"{k} {v}" for k, v in block["finish_reasons"].items())
    return [block["problems"], block["trajectories"], f"{block[f'avg@{n}']:.3f}", f"{block[f'pass@{n}']:.3f}",
            f"{block[f'maj@{n}']:.3f}", f"{block['tool_calls_per_traj']:.2f}", f"{block['tool_error_ratio']:.3f}",
            f"{block['response_length']:.0f}", reasons]


def records_for(records: Iterable[dict], items: Sequence[EvalItem], n: int) -> list[dict]:
    """One record per (problem, sample) of these items and samples < n: the last one, except that a scored
    record wins over one the sandbox failed (which a rerun ran again)."""
    keep = {item.index for item in items}
    by_pair: dict[tuple[int, int], dict] = {}
    for r in records:
        pair = (r.get("problem_index"), int(r.get("sample", -1)))
        if pair[0] not in keep or pair[1] >= n:
            continue
        if r.get("infra_error") and pair in by_pair and not by_pair[pair].get("infra_error"):
            continue
        by_pair[pair] = r
    return [by_pair[p] for p in sorted(by_pair)]
