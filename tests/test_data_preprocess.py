"""data_preprocess/*.py on the small fixtures in tests/data (each in its source dataset's own column layout).

Every fixture holds valid rows and a few broken ones; the tests check the written parquet row by row, the
skipped rows and the report, the error messages for unusable input, the hub path (with `load_dataset`
replaced, as nothing can be downloaded here), and that verl's RLHFDataset reads the training file.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS_DIR = REPO / "data_preprocess"
DATA = Path(__file__).resolve().parent / "data"

COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info", "agent_name"]


def load_common():
    """data_preprocess/common.py, imported as `common` the way the scripts import it (from their own folder)."""
    if str(SCRIPTS_DIR) not in sys.path:
        sys.path.insert(0, str(SCRIPTS_DIR))
    module = importlib.import_module("common")
    assert Path(module.__file__).resolve() == SCRIPTS_DIR / "common.py", f"another `common`: {module.__file__}"
    return module


def load_script(name: str):
    """Import data_preprocess/<name>.py as a module."""
    load_common()
    spec = importlib.util.spec_from_file_location(f"preprocess_{name}", SCRIPTS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_row(data_source: str, split: str, index: int, question: str, answer: str) -> dict:
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": question}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": split, "index": index, "answer": answer, "question": question,
                       "need_tools_kwargs": False, "interaction_kwargs": {"query": question, "ground_truth": answer}},
        "agent_name": "rstar2_agent",
    }


def read_rows(path: Path) -> list[dict]:
    table = pq.read_table(path)
    assert table.column_names == COLUMNS
    return table.to_pylist()


# (script, fixture, output file, data_source, split, [(source index, question, answer)], {reason: count})
CASES = {
    "dapo": (
        "dapo_rstar2_agent_loop", "dapo_math_17k_en.jsonl", "train.parquet",
        "rstar_open-r1/DAPO-Math-17k-Processed", "train",
        [(0, "Let $x$ be a positive real number with $x^2 = 49$. Find $x + 3$.", "10"),
         (1, "How many positive divisors does $36$ have?", "9"),
         (4, "The sum of two consecutive integers is $41$. Find the larger one.", "21"),  # int in the source
         (5, "Find the remainder when $7^{100}$ is divided by $5$.", "1")],  # "  1 " in the source
        {"blank problem": 1, "missing answer": 1, "blank answer": 1},
    ),
    "aime2024": (
        "aime2024_rstar2_agent_loop", "aime_2024.json", "test.parquet", "rstar_HuggingFaceH4/aime_2024", "test",
        [(0, "Find the number of ordered pairs $(a,b)$ of positive integers with $a+b=20$.", "019"),
         (2, "Let $N$ be the least positive integer divisible by $8$, $9$ and $10$. Find $N$.", "360"),
         (4, "Find the largest prime factor of $1001$.", "13")],
        {"blank problem": 1, "missing answer": 1},
    ),
    "aime2025": (
        "aime2025_rstar2_agent_loop", "aime2025", "test.parquet", "rstar_opencompass/AIME2025", "test",
        [(0, "Find the sum of all positive integers $n$ such that $n^2 < 30$.", "15"),
         (1, "How many subsets of $\\{1,2,3,4,5\\}$ contain the element $3$?", "16"),
         (3, "Find the number of trailing zeros of $25!$.", "6"),  # part II starts at index 3
         (5, "Compute $\\binom{8}{3}$.", "56")],
        {"blank answer": 1, "problem is not a string (int)": 1},
    ),
    "math500": (
        "math500_rstar2_agent_loop", "math500.jsonl", "test.parquet", "rstar_HuggingFaceH4/MATH-500", "test",
        [(0, "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.",
          "\\left( 3, \\frac{\\pi}{2} \\right)"),
         (1, "Simplify $\\frac{28}{6}$.", "\\frac{14}{3}"),
         (3, "What is $0.5 + 0.25$?", "0.75"),  # a float in the source
         (5, "Which is larger, $2^{10}$ or $10^3$? Enter the larger number.", "1024")],
        {"missing problem": 1, "answer is not a string or number (list)": 1},
    ),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rows_written_exactly(case, tmp_path, capsys):
    script, fixture, out_name, source, split, kept, skipped = CASES[case]
    result = load_script(script).main(["--input", str(DATA / fixture), "--local_dir", str(tmp_path / case)])
    out = tmp_path / case / out_name
    assert result.output_path == str(out)
    rows = read_rows(out)
    assert rows == [expected_row(source, split, i, q, a) for i, q, a in kept]
    assert result.rows == rows
    assert all(isinstance(r["reward_model"]["ground_truth"], str) for r in rows)
    assert all(r["agent_name"] == "rstar2_agent" for r in rows)
    assert dict(result.skipped_counts) == skipped
    assert result.total == len(kept) + sum(skipped.values())

    printed = capsys.readouterr().out
    assert f"skipped {sum(skipped.values())} of {result.total} rows:" in printed
    for reason, count in skipped.items():
        assert f"{count:6d}  {reason}" in printed
    for index, reason in result.skipped:
        assert f"{index} ({reason})" in printed
    assert f"wrote {len(kept)} rows to {out}" in printed


def test_parquet_input_gives_the_same_rows(tmp_path):
    """A parquet copy of the source (as `datasets` would save it) converts exactly like the JSON lines."""
    import pandas as pd

    src = tmp_path / "math500.parquet"
    records = [json.loads(line) for line in (DATA / "math500.jsonl").read_text().splitlines()]
    for r in records:  # parquet needs one type per column: keep the broken answers, as strings or nulls
        r["answer"] = None if isinstance(r["answer"], list) else r["answer"]
        r["answer"] = str(r["answer"]) if isinstance(r["answer"], float) else r["answer"]
    pd.DataFrame(records).to_parquet(src)
    mod = load_script("math500_rstar2_agent_loop")
    from_parquet = mod.main(["--input", str(src), "--local_dir", str(tmp_path / "a")])
    from_jsonl = mod.main(["--input", str(DATA / "math500.jsonl"), "--local_dir", str(tmp_path / "b")])
    assert from_parquet.rows == from_jsonl.rows
    assert dict(from_parquet.skipped_counts) == {"missing problem": 1, "missing answer": 1}


def test_aime2025_parts_concatenate_in_the_order_given(tmp_path):
    mod = load_script("aime2025_rstar2_agent_loop")
    parts = [str(DATA / "aime2025" / "aime2025-II.jsonl"), str(DATA / "aime2025" / "aime2025-I.jsonl")]
    result = mod.main(["--input", *parts, "--local_dir", str(tmp_path)])
    assert [r["extra_info"]["index"] for r in result.rows] == [0, 2, 3, 4]
    assert result.rows[0]["reward_model"]["ground_truth"] == "6"


def test_json_object_and_json_lines_in_a_json_file(tmp_path):
    records = json.loads((DATA / "aime_2024.json").read_text())
    mod = load_script("aime2024_rstar2_agent_loop")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"train": records}))
    lines = tmp_path / "lines.json"
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    baseline = mod.main(["--input", str(DATA / "aime_2024.json"), "--local_dir", str(tmp_path / "0")]).rows
    assert mod.main(["--input", str(wrapped), "--local_dir", str(tmp_path / "1")]).rows == baseline
    assert mod.main(["--input", str(lines), "--local_dir", str(tmp_path / "2")]).rows == baseline


@pytest.mark.parametrize("case", CASES, ids=str)
def test_script_runs_from_the_command_line(case, tmp_path):
    script, fixture, out_name, _, _, kept, skipped = CASES[case]
    proc = subprocess.run([sys.executable, str(SCRIPTS_DIR / f"{script}.py"), "--input", str(DATA / fixture),
                           "--local_dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {len(kept)} rows to {tmp_path / out_name}" in proc.stdout
    assert "read " in proc.stdout and "skipped " in proc.stdout
    assert len(pq.read_table(tmp_path / out_name)) == len(kept)


def test_unexpected_columns_name_the_columns_found(tmp_path):
    """MATH-500 rows given to the AIME 2025 script: no `question` column."""
    proc = subprocess.run([sys.executable, str(SCRIPTS_DIR / "aime2025_rstar2_agent_loop.py"),
                           "--input", str(DATA / "math500.jsonl"), "--local_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert ("error: aime2025: the input has no 'question' column (columns found: problem, solution, answer, "
            "subject, level, unique_id); expected the opencompass/AIME2025 layout: question and one of answer"
            ) in proc.stderr
    assert not list(tmp_path.iterdir())


def test_missing_answer_column(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"problem": "What is 1+1?", "solution": "2"}) + "\n")
    with pytest.raises(SystemExit) as exc:
        load_script("math500_rstar2_agent_loop").main(["--input", str(src), "--local_dir", str(tmp_path / "o")])
    assert str(exc.value) == ("error: math500: the input has no answer column (answer) (columns found: problem, "
                              "solution); expected the HuggingFaceH4/MATH-500 layout: problem and one of answer")


def test_dapo_falls_back_to_the_solution_column(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "What is 1+1?", "solution": 2}) + "\n")
    result = load_script("dapo_rstar2_agent_loop").main(["--input", str(src), "--local_dir", str(tmp_path)])
    assert result.rows == [expected_row("rstar_open-r1/DAPO-Math-17k-Processed", "train", 0, "What is 1+1?", "2")]


@pytest.mark.parametrize("make_input,message", [
    (lambda d: d / "nope.jsonl", "error: input not found: {d}/nope.jsonl"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "error: input directory {d}/empty holds no "
                                                     ".parquet/.json/.jsonl files"),
    (lambda d: (d / "x.csv").write_text("a,b\n") and d / "x.csv",
     "error: input {d}/x.csv: unsupported file type (use .parquet, .json, .jsonl)"),
    (lambda d: (d / "bad.jsonl").write_text('{"problem": "a", "answer": "1"}\n{oops\n') and d / "bad.jsonl",
     "error: {d}/bad.jsonl, line 2: not valid JSON (Expecting property name enclosed in double quotes)"),
])
def test_bad_input_errors(make_input, message, tmp_path):
    path = make_input(tmp_path)
    with pytest.raises(SystemExit) as exc:
        load_script("aime2024_rstar2_agent_loop").main(["--input", str(path), "--local_dir", str(tmp_path / "o")])
    assert str(exc.value) == message.format(d=tmp_path)
    assert not (tmp_path / "o").exists()


def test_no_valid_rows_writes_nothing(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": " ", "answer": "1"}) + "\n")
    with pytest.raises(SystemExit) as exc:
        load_script("aime2025_rstar2_agent_loop").main(["--input", str(src), "--local_dir", str(tmp_path / "o")])
    assert str(exc.value) == "error: aime2025: no valid rows left out of 1; nothing written"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value,expected", [
    ("  42 ", ("42", None)), (7, ("7", None)), (12.0, ("12", None)), (0.75, ("0.75", None)),
    ("\\frac{1}{2}", ("\\frac{1}{2}", None)), (None, (None, "missing answer")),
    (float("nan"), (None, "missing answer")), ("", (None, "blank answer")), ("\n\t", (None, "blank answer")),
    (True, (None, "answer is not a string or number (bool)")),
    ({"a": 1}, (None, "answer is not a string or number (dict)")),
])
def test_normalize_answer(value, expected):
    assert load_common().normalize_answer(value) == expected


def test_hub_loading_uses_the_upstream_ids(tmp_path, monkeypatch):
    """Without --input each script calls datasets.load_dataset(<upstream id>, <config>, split=...)."""
    import datasets

    calls = []
    parts = {"AIME2025-I": [{"question": "Q1", "answer": "1"}], "AIME2025-II": [{"question": "Q2", "answer": 2}]}

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        rows = parts.get(name) or [{"problem": "P", "answer": "3", "prompt": "P",
                                    "reward_model": {"ground_truth": "3", "style": "rule-lighteval/MATH_v2"}}]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    results = {}
    for name in ("dapo", "aime2024", "aime2025", "math500"):
        results[name] = load_script(f"{name}_rstar2_agent_loop").main(["--local_dir", str(tmp_path / name)])
    assert calls == [
        ("open-r1/DAPO-Math-17k-Processed", "en", "train"),
        ("HuggingFaceH4/aime_2024", None, "train"),
        ("opencompass/AIME2025", "AIME2025-I", "test"),
        ("opencompass/AIME2025", "AIME2025-II", "test"),
        ("HuggingFaceH4/MATH-500", None, "test"),
    ]
    assert results["aime2025"].rows == [expected_row("rstar_opencompass/AIME2025", "test", 0, "Q1", "1"),
                                        expected_row("rstar_opencompass/AIME2025", "test", 1, "Q2", "2")]
    assert (tmp_path / "dapo" / "train.parquet").exists() and (tmp_path / "math500" / "test.parquet").exists()


def test_hub_failure_says_to_use_input(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/MATH-500' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SystemExit) as exc:
        load_script("math500_rstar2_agent_loop").main(["--local_dir", str(tmp_path)])
    assert str(exc.value).startswith("error: could not load HuggingFaceH4/MATH-500 from the Hugging Face hub: "
                                     "ConnectionError: Couldn't reach")
    assert str(exc.value).endswith("pass the files with --input")


def test_default_output_dirs():
    for name, folder in [("dapo", "dapo-math-17k-en"), ("aime2024", "aime2024"), ("aime2025", "aime2025"),
                         ("math500", "math500")]:
        mod = load_script(f"{name}_rstar2_agent_loop")
        args = load_common().build_parser(mod.SPEC).parse_args([])
        assert args.local_dir == f"~/data/rstar2-agent/{folder}"


def test_verl_rlhf_dataset_reads_the_training_parquet(tmp_path, monkeypatch):
    """verl's own dataset class loads the file, sizes prompts with our chat template + tool block, yields rows."""
    import datasets
    from omegaconf import OmegaConf
    from rstar2_agent.engine.tiny import build_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    result = load_script("dapo_rstar2_agent_loop").main(
        ["--input", str(DATA / "dapo_math_17k_en.jsonl"), "--local_dir", str(tmp_path / "dapo")])
    config = OmegaConf.create({
        "prompt_key": "prompt", "max_prompt_length": 2048, "filter_overlong_prompts": True,
        "filter_overlong_prompts_workers": 1, "return_raw_chat": True, "truncation": "error",
        "cache_dir": str(tmp_path / "verl-cache"),
        "tool_config_path": str(REPO / "rstar2_agent" / "config" / "tool_config" / "python_tool_config.yaml"),
    })
    tokenizer = build_tokenizer()
    dataset = RLHFDataset(result.output_path, tokenizer, config)
    assert dataset.tool_schemas and dataset.tool_schemas[0]["function"]["name"] == "python_code_with_standard_io"
    assert len(dataset) == len(result.rows) == 4  # nothing is too long with the tool block included
    items = [dataset[i] for i in range(len(dataset))]
    for item, row in zip(items, result.rows):
        assert item["raw_prompt"] == row["prompt"]
        assert item["agent_name"] == "rstar2_agent"
        assert item["reward_model"] == {"style": "rule", "ground_truth": row["reward_model"]["ground_truth"]}
        assert item["index"] == row["extra_info"]["index"]
        assert item["interaction_kwargs"] == row["extra_info"]["interaction_kwargs"]
        assert item["tools_kwargs"] == {}
    batch = collate_fn(items)
    assert list(batch["agent_name"]) == ["rstar2_agent"] * 4
    text = tokenizer.apply_chat_template(items[0]["raw_prompt"], tools=dataset.tool_schemas,
                                         add_generation_prompt=True, tokenize=False)
    assert result.rows[0]["prompt"][0]["content"] in text and "<tools>" in text

    # a prompt longer than max_prompt_length is dropped by verl's filter, as in training
    short = RLHFDataset(result.output_path, tokenizer, OmegaConf.merge(config, {"max_prompt_length": 50}))
    assert len(short) == 0
