"""benchmarks/cpu_learning.py's verl side: reading verl's console log (a real excerpt, Ray's prefixes and colour
codes included, in tests/data/verl_0.9.1/console_excerpt.log), the before/after record of a seed and the summary
over the verl seeds only."""

import doctest
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cpu_learning  # noqa: E402

EXCERPT = Path(__file__).resolve().parent / "data" / "verl_0.9.1" / "console_excerpt.log"


def test_worked_examples():
    result = doctest.testmod(cpu_learning)
    assert result.attempted >= 3 and result.failed == 0


def test_a_real_verl_log_gives_its_validations_and_step_times():
    steps = cpu_learning.verl_step_metrics(EXCERPT.read_text())
    validated = {step: cpu_learning.verl_headline(m) for step, m in steps.items() if cpu_learning.verl_headline(m)}
    assert sorted(validated) == [0, 8]
    assert validated[0] == {"val/accuracy": 0.35, "val/reward_mean": 0.35, "val/num_turns_mean": 3.625}
    assert 0 <= validated[8]["val/accuracy"] <= 1
    # step 1 was printed on two lines (our rollout metrics first, verl's own after): both are kept
    assert steps[1]["rollout/tool_calls_mean"] == 0.375 and steps[1]["timing_s/step"] > 0


def _work(tmp_path, log_text, steps=8, rc=0):
    work = tmp_path / "verl_seed1"
    work.mkdir()
    (work / "verl.log").write_text(log_text)
    (work / "run.json").write_text(json.dumps({"seed": 1, "steps": steps, "split": "holdout", "seconds": 3000,
                                               "cold_start_s": 120, "rc": rc, "verl_command": "python3 -m ..."}))
    return work


def test_a_seed_record_and_the_summary_cover_verl_seeds_only(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(cpu_learning, "RESULTS", results)
    engine_seed = {"seed": 1, "steps": 8, "before": {"val/accuracy": 0.9}, "after": {"val/accuracy": 1.0}}
    (results / "cpu_learning_holdout_seed1.json").write_text(json.dumps(engine_seed))

    record = cpu_learning.record_seed_verl(_work(tmp_path, EXCERPT.read_text()))
    assert record["before"]["step"] == 0 and record["after"]["step"] == 8
    assert record["before"]["val/accuracy"] == 0.35 and record["trainer"] == "verl"
    assert len(record["step_s"]) == 2 and all(s > 0 for s in record["step_s"])  # the excerpt's two timed steps
    written = json.loads((results / "cpu_learning_verl_holdout_seed1.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert (results / "cpu_learning_verl_holdout_seed1.log").read_text() == EXCERPT.read_text()

    summary = cpu_learning.summarize("holdout", "verl")
    assert summary["seeds"] == [1] and summary["before"]["val/accuracy"]["mean"] == 0.35
    assert cpu_learning.summarize("holdout")["before"]["val/accuracy"]["mean"] == 0.9  # the engine's, apart


@pytest.mark.parametrize("steps, rc", [(9, 0), (8, 1)])
def test_a_run_that_did_not_validate_after_its_last_step_is_refused(tmp_path, monkeypatch, steps, rc):
    monkeypatch.setattr(cpu_learning, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="did not validate before and after step"):
        cpu_learning.record_seed_verl(_work(tmp_path, EXCERPT.read_text(), steps=steps, rc=rc))
    assert not list(tmp_path.glob("cpu_learning_verl_*"))
