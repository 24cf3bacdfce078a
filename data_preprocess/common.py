"""Shared helpers of the data_preprocess scripts: load a source dataset, turn rows into verl rows, write parquet.

Every script describes its source with a :class:`DatasetSpec` and calls :func:`main`. Each output row has the
rStar2-Agent schema (the same fields and values as the upstream release):

    data_source  "rstar_" + <Hugging Face dataset id>
    prompt       [{"role": "user", "content": <problem text, unchanged>}]   (the chat template adds the rest)
    ability      "math"
    reward_model {"style": "rule", "ground_truth": <answer as a string>}
    extra_info   {"split", "index" (row number in the source), "answer", "question",
                  "need_tools_kwargs": False, "interaction_kwargs": {"query", "ground_truth"}}
    agent_name   "rstar2_agent"                                          (selects our verl agent loop)

Rows whose problem or answer is missing, blank or of the wrong type are skipped; the script prints how many,
why, and which source rows.

A source is either the Hugging Face hub (the default; ``datasets`` is imported only then) or ``--input``:
files or directories of ``.parquet``, ``.json`` (a list of records, ``{"<name>": [records]}`` or JSON lines)
or ``.jsonl`` files, read in the order given (files of a directory in name order) and concatenated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rstar2_agent.data.rows import AGENT_NAME, verl_row, write_parquet

DATA_SOURCE_PREFIX = "rstar_"
SUPPORTED_SUFFIXES = (".parquet", ".json", ".jsonl")
DEFAULT_DATA_ROOT = os.path.join("~", "data", "rstar2-agent")
PROGRESS_EVERY = 5000

__all__ = [
    "AGENT_NAME",
    "DatasetSpec",
    "PreprocessError",
    "Result",
    "build_parser",
    "check_columns",
    "convert",
    "load_hub",
    "load_local",
    "main",
    "make_row",
    "normalize_answer",
    "report_skipped",
    "write_parquet",
]


class PreprocessError(Exception):
    """A problem with the input as a whole (missing file, wrong columns); the scripts exit with its message."""


@dataclass(frozen=True)
class DatasetSpec:
    """How one source dataset maps onto the rStar2-Agent row schema."""

    name: str  # output folder under ~/data/rstar2-agent/, e.g. "aime2024"
    hub_id: str  # Hugging Face dataset id; data_source is "rstar_" + this
    hub_split: str  # split loaded from the hub
    hub_configs: tuple[str | None, ...]  # configs loaded from the hub and concatenated in this order
    question_field: str  # column holding the problem text
    answer_fields: tuple[str, ...]  # columns holding the answer, first present wins; "a.b" reads row["a"]["b"]
    split: str  # "train" or "test": extra_info.split and the output file name (<split>.parquet)
    description: str = ""

    @property
    def data_source(self) -> str:
        return DATA_SOURCE_PREFIX + self.hub_id

    @property
    def output_name(self) -> str:
        return f"{self.split}.parquet"


@dataclass
class Result:
    """What one run did: the output file, the rows written, and the skipped rows with their reasons."""

    output_path: str
    rows: list[dict[str, Any]]
    total: int
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (source row index, reason)

    @property
    def skipped_counts(self) -> Counter:
        return Counter(reason for _, reason in self.skipped)


# ----------------------------------------------------------------------------------------------- loading


def _read_json_file(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # not one JSON document: try JSON lines below (HF exports .json as JSON lines)
        if isinstance(data, list):
            records = data
        elif isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise PreprocessError(f"{path}: a JSON object must hold exactly one list of records "
                                      f"(found keys: {', '.join(map(str, data)) or 'none'})")
            records = lists[0]
        else:
            records = None
        if records is not None:
            bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
            if bad:
                raise PreprocessError(f"{path}: record {bad[0]} is not a JSON object")
            return records
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PreprocessError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise PreprocessError(f"{path}, line {lineno}: not a JSON object")
        records.append(record)
    return records


def _read_parquet_file(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt or foreign file
        raise PreprocessError(f"{path}: cannot read as parquet ({e})") from None
    return table.to_pylist(), list(table.column_names)


def _expand_inputs(inputs: Sequence[str]) -> list[str]:
    files = []
    for raw in inputs:
        path = os.path.expanduser(raw)
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(SUPPORTED_SUFFIXES))
            if not found:
                raise PreprocessError(f"input directory {raw} holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
            files.extend(found)
        elif os.path.isfile(path):
            if not path.endswith(SUPPORTED_SUFFIXES):
                raise PreprocessError(f"input {raw}: unsupported file type (use {', '.join(SUPPORTED_SUFFIXES)})")
            files.append(path)
        else:
            raise PreprocessError(f"input not found: {raw}")
    return files


def load_local(inputs: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the given files/directories, concatenated, and the columns found (in first-seen order)."""
    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    for path in _expand_inputs(inputs):
        if path.endswith(".parquet"):
            file_rows, file_columns = _read_parquet_file(path)
        else:
            file_rows = _read_json_file(path)
            file_columns = [k for r in file_rows for k in r]
        columns.update(dict.fromkeys(file_columns))
        print(f"read {len(file_rows)} rows from {path}")
        rows.extend(file_rows)
    return rows, list(columns)


def load_hub(spec: DatasetSpec) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the spec's hub dataset (all its configs, concatenated) and their columns."""
    import datasets

    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    for config in spec.hub_configs:
        label = spec.hub_id + (f" ({config})" if config else "")
        print(f"loading {label}, split {spec.hub_split}, from the Hugging Face hub")
        try:
            ds = datasets.load_dataset(spec.hub_id, config, split=spec.hub_split)
        except Exception as e:
            raise PreprocessError(f"could not load {label} from the Hugging Face hub: {type(e).__name__}: {e}\n"
                                  f"download it elsewhere and pass the files with --input") from None
        columns.update(dict.fromkeys(ds.column_names))
        rows.extend(ds.to_list())
        print(f"read {len(ds)} rows from {label}")
    return rows, list(columns)


# ------------------------------------------------------------------------------------------- conversion


def _lookup(row: dict[str, Any], dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _present(columns: Iterable[str], dotted: str) -> bool:
    return dotted.split(".", 1)[0] in set(columns)


def _type_name(value: Any) -> str:
    return type(value).__name__


def normalize_answer(value: Any) -> tuple[str | None, str | None]:
    """``(ground truth as a string, None)`` or ``(None, reason it is unusable)``.

    Strings are stripped; integers (and integral floats, as pandas makes of integer columns with gaps) become
    their decimal text. Missing, blank, NaN, boolean and container values are refused.
    """
    if value is None:
        return None, "missing answer"
    if isinstance(value, bool):
        return None, "answer is not a string or number (bool)"
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        if math.isnan(value):
            return None, "missing answer"
        if math.isinf(value):
            return None, "answer is not finite"
        return (str(int(value)) if value.is_integer() else repr(value)), None
    if isinstance(value, str):
        text = value.strip()
        return (text, None) if text else (None, "blank answer")
    return None, f"answer is not a string or number ({_type_name(value)})"


def _problem(value: Any) -> tuple[str | None, str | None]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, "missing problem"
    if not isinstance(value, str):
        return None, f"problem is not a string ({_type_name(value)})"
    if not value.strip():
        return None, "blank problem"
    return value, None


def make_row(spec: DatasetSpec, index: int, question: str, answer: str) -> dict[str, Any]:
    """One output row (see the module docstring)."""
    return verl_row(spec.data_source, spec.split, index, question, answer)


def check_columns(spec: DatasetSpec, columns: Sequence[str]) -> str:
    """The answer field to use; raises :class:`PreprocessError` naming the columns found if one is missing."""
    found = ", ".join(columns) if columns else "none"
    expected = f"{spec.question_field} and one of {', '.join(spec.answer_fields)}"
    if not _present(columns, spec.question_field):
        raise PreprocessError(f"{spec.name}: the input has no '{spec.question_field}' column "
                              f"(columns found: {found}); expected the {spec.hub_id} layout: {expected}")
    for answer_field in spec.answer_fields:
        if _present(columns, answer_field):
            return answer_field
    raise PreprocessError(f"{spec.name}: the input has no answer column ({' or '.join(spec.answer_fields)}) "
                          f"(columns found: {found}); expected the {spec.hub_id} layout: {expected}")


def convert(spec: DatasetSpec, rows: Sequence[dict[str, Any]],
            columns: Sequence[str]) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Output rows and ``(source index, reason)`` for each skipped row."""
    answer_field = check_columns(spec, columns)
    out: list[dict[str, Any]] = []
    skipped: list[tuple[int, str]] = []
    total = len(rows)
    for index, row in enumerate(rows):
        question, reason = _problem(row.get(spec.question_field))
        if reason is None:
            answer, reason = normalize_answer(_lookup(row, answer_field))
        if reason is not None:
            skipped.append((index, reason))
        else:
            out.append(make_row(spec, index, question, answer))
        if (index + 1) % PROGRESS_EVERY == 0 and index + 1 < total:
            print(f"  {index + 1}/{total} rows")
    return out, skipped


# ---------------------------------------------------------------------------------------------- writing


def report_skipped(skipped: Sequence[tuple[int, str]], total: int, max_rows: int) -> None:
    if not skipped:
        print(f"skipped 0 of {total} rows")
        return
    print(f"skipped {len(skipped)} of {total} rows:")
    for reason, count in Counter(r for _, r in skipped).most_common():
        print(f"  {count:6d}  {reason}")
    shown = ", ".join(f"{i} ({r})" for i, r in skipped[:max_rows])
    more = f", ... and {len(skipped) - max_rows} more" if len(skipped) > max_rows else ""
    print(f"  skipped source rows: {shown}{more}")


# -------------------------------------------------------------------------------------------------- CLI


def build_parser(spec: DatasetSpec) -> argparse.ArgumentParser:
    hub = spec.hub_id + "".join(f" [{c}]" for c in spec.hub_configs if c)
    parser = argparse.ArgumentParser(
        description=(spec.description or f"Convert {spec.hub_id} into rStar2-Agent verl parquet.")
        + f" Writes <local_dir>/{spec.output_name}.",
        epilog=f"Default source: {hub}, split {spec.hub_split}, from the Hugging Face hub.")
    parser.add_argument("--input", nargs="+", metavar="PATH",
                        help="read these local files or directories (.parquet, .json, .jsonl) in the source "
                             "dataset's own column layout instead of the hub; several are concatenated")
    parser.add_argument("--local_dir", default=os.path.join(DEFAULT_DATA_ROOT, spec.name),
                        help="output directory (default: %(default)s)")
    parser.add_argument("--max_report", type=int, default=20,
                        help="list at most this many skipped rows by index (default: %(default)s)")
    return parser


def main(spec: DatasetSpec, argv: Sequence[str] | None = None) -> Result:
    """Run one script; exits with a one-line message (``SystemExit``) if the input as a whole is unusable."""
    args = build_parser(spec).parse_args(argv)
    try:
        rows, columns = load_local(args.input) if args.input else load_hub(spec)
        print(f"converting {len(rows)} rows ({spec.data_source}, split {spec.split})")
        out, skipped = convert(spec, rows, columns)
    except PreprocessError as e:
        raise SystemExit(f"error: {e}") from None
    report_skipped(skipped, len(rows), args.max_report)
    if not out:
        raise SystemExit(f"error: {spec.name}: no valid rows left out of {len(rows)}; nothing written")
    path = os.path.join(os.path.expanduser(args.local_dir), spec.output_name)
    write_parquet(out, path)
    print(f"wrote {len(out)} rows to {path}")
    sys.stdout.flush()
    return Result(output_path=path, rows=out, total=len(rows), skipped=skipped)
