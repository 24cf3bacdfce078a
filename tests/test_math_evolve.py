"""One self-evolution round: search with a scripted teacher, extract, SFT and PPM training on the tiny model;
every phase logged; a rerun resumes (skips finished phases, redoes a missing one); the `math evolve` command
end to end (tiny model, tiny limits, the code judge): metrics, wandb offline, the PNG, resume."""

from __future__ import annotations

import contextlib
import io
import json
import re

from rstar2_agent.math import evolve
from rstar2_agent.math.backends import TransformersGenerator
from rstar2_agent.math.config import SearchConfig
from rstar2_agent.math.extract import read_rows
from rstar2_agent.math.ppm import PPMScorer
from rstar2_agent.math.steps import Continuation
from rstar2_agent.verl_cpu.models import save_tiny

ITEMS = [{"question": f"What is {k}+{k}?", "answer": str(2 * k)} for k in (1, 2, 3)]


class Teacher:
    """Per question k: a code step or a wrong answer; then print (closing the block); then the right answer."""

    def generate(self, prompts, n, params):
        out = []
        for p in prompts:
            k = int(re.search(r"What is (\d)\+", p).group(1))
            if "<end_of_output>" in p:
                out.append([Continuation(f"<answer>The answer is \\boxed{{{2 * k}}}", "<end_of_answer>", 5)])
            elif "<code>" in p:
                out.append([Continuation("print(x)\n", "<end_of_code>", 3)])
            else:
                out.append([Continuation(f"<code>\nx = {k} + {k}\n", "<end_of_step>", 5),
                            Continuation(f"The answer is \\boxed{{{2 * k + 1}}}", None, 5)])
        return out


class InTestExecutor:
    """Runs the teacher's (test-written, trusted) code in-process."""

    def run(self, codes):
        out = []
        for code in codes:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(code, {})  # noqa: S102 - the test's own scripted code
            out.append(buf.getvalue())
        return out


FLAGS = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
         "--learning_rate", "1e-3", "--save_strategy", "no"]


def test_doctests():
    import doctest

    from rstar2_agent.math import evolve_cli

    for module in (evolve, evolve_cli):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_one_round_end_to_end_and_resume(tmp_path):
    policy = save_tiny(str(tmp_path / "policy0"), seed=0)
    cfg = SearchConfig(n_generate_sample=2, iterations=4, max_depth=6, is_sampling=True, errors_threshold=1,
                       save_intermediate_rollouts=False)
    work = tmp_path / "evolve"
    layout = evolve.evolve_round(work, 1, ITEMS, policy, Teacher(), InTestExecutor(), cfg,
                                 sft_flags=FLAGS, ppm_flags=FLAGS)
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [(x["round"], x["phase"], x.get("skipped", False)) for x in lines] == [
        (1, "search", False), (1, "extract", False), (1, "sft", False), (1, "ppm", False)]
    assert lines[1]["sft_examples"] == 3 and lines[1]["pairs"] == 3  # one trace and one root pair per question
    assert lines[2]["steps"] == 2 and lines[3]["steps"] == 2
    assert len(read_rows(layout.sft, ("query", "response"))) == 3
    # the round's models load where the next round needs them: policy in the search backend, PPM as scorer
    TransformersGenerator.from_pretrained(str(layout.policy))
    assert len(PPMScorer.from_pretrained(layout.ppm).score(["<code>\nx = 1\n<end_of_step>\n"])) == 1

    # a rerun skips every phase; a missing PPM is trained again, nothing else
    evolve.evolve_round(work, 1, ITEMS, policy, Teacher(), InTestExecutor(), cfg, sft_flags=FLAGS, ppm_flags=FLAGS)
    (layout.ppm / "value_head.bin").unlink()
    evolve.evolve_round(work, 1, ITEMS, policy, Teacher(), InTestExecutor(), cfg, sft_flags=FLAGS, ppm_flags=FLAGS)
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()][4:]
    assert [(x["phase"], x.get("skipped", False)) for x in lines] == [
        ("search", True), ("extract", True), ("sft", True), ("ppm", True),
        ("search", True), ("extract", True), ("sft", True), ("ppm", False)]
    assert (layout.ppm / "value_head.bin").is_file()


class PreferCode:
    """A scripted PPM: a text ending in a code step or an output scores high, a bare wrong answer low."""

    def score(self, texts):
        return [0.9 if ("<end_of_step>" in t[-40:] or "<end_of_output>" in t[-40:] or "<answer>" in t[-60:])
                else -0.9 for t in texts]


def test_evaluation_logs_pass_at_1_per_config(tmp_path):
    beam = SearchConfig(mode="bs", n_generate_sample=2, step_beam_width=2, max_depth=6, need_value_func=True,
                        save_intermediate_rollouts=False)
    scores = evolve.evaluate_round(tmp_path, 1, ITEMS, Teacher(), InTestExecutor(), {"beam_ppm": beam},
                                   value_model=PreferCode())
    # the wrong answer at the root takes one of the 2 beam slots (final, Q -0.9); the code step goes on to the
    # right answer (Q 0.9), the best-valued terminal of every tree
    assert scores == {"beam_ppm": 1.0}
    [line] = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert (line["phase"], line["mode"], line["questions"], line["pass@1"]) == ("eval", "beam_ppm", 3, 1.0)
    assert (tmp_path / "round_01" / "eval_beam_ppm.jsonl").is_file()


def test_cli_one_round_end_to_end_resumes_and_writes_metrics_and_png(tmp_path, judge_url, capsys):
    """`rstar2-agent math evolve` with the tiny model, tiny limits and the scripted teacher: every phase of round
    0 and round 1 logged, the models and eval files in round_01/, wandb offline files and the PNG; a rerun skips
    every phase."""
    from rstar2_agent.math import evolve_cli
    from rstar2_agent.math.run import main

    policy = save_tiny(str(tmp_path / "policy0"), seed=0)
    out = tmp_path / "run"
    argv = ["math", "evolve", "--rounds", "1", "--out", str(out), "--model", policy, "--train-limit", "8",
            "--eval-limit", "8", "--judge-url", judge_url, "--seed", "1", "max_tokens=12", "max_depth=3",
            "greedy.max_tokens=24", "sft.max_steps=2", "ppm.max_steps=2", "sft.per_device_train_batch_size=2",
            "ppm.per_device_train_batch_size=2"]
    main(argv)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    phases = [(x["round"], x["phase"], x.get("mode")) for x in lines]
    assert phases == [(0, "heldout_pairs", None), (0, "eval", "greedy"), (1, "search", None), (1, "extract", None),
                      (1, "sft", None), (1, "ppm", None), (1, "eval", "greedy"), (1, "eval", "beam_ppm"),
                      (1, "eval", "mcts_ppm"), (1, "ppm_heldout", None)]
    assert not any(x.get("skipped") for x in lines)
    by_phase = {(x["phase"], x.get("mode")): x for x in lines}
    assert by_phase[("extract", None)]["sft_examples"] > 0 and by_phase[("extract", None)]["pairs"] > 0
    assert by_phase[("heldout_pairs", None)]["pairs"] > 0
    assert 0.0 <= by_phase[("ppm_heldout", None)]["accuracy"] <= 1.0
    assert all(by_phase[("eval", m)]["questions"] == 8 for m in evolve_cli.EVAL_MODES)
    round1 = out / "round_01"
    assert (round1 / "policy" / "config.json").is_file() and (round1 / "ppm" / "value_head.bin").is_file()
    for mode in evolve_cli.EVAL_MODES:
        assert len((round1 / f"eval_{mode}.jsonl").read_text().splitlines()) == 8
    assert (out / "round_00" / "eval_greedy.jsonl").is_file()
    assert (out / "evolve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "wandb").glob("offline-run-*"))
    printed = capsys.readouterr().out
    assert "| round | greedy | beam_ppm | mcts_ppm | ppm pair acc |" in printed
    scores = evolve_cli.round_scores(out / "metrics.jsonl")
    assert set(scores[1]) >= {"greedy", "beam_ppm", "mcts_ppm", "ppm_pair_acc"} and "greedy" in scores[0]

    # rerun: every phase is skipped (nothing searched or trained again), the scores are the same
    main(argv + ["--logger", "none"])
    again = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][len(lines):]
    assert [(x["round"], x["phase"], x.get("mode")) for x in again] == phases
    assert all(x.get("skipped") for x in again)
    assert evolve_cli.round_scores(out / "metrics.jsonl") == scores


def test_overrides_reach_their_config_and_bad_ones_fail():
    import pytest

    from rstar2_agent.math.config import SearchConfigError
    from rstar2_agent.math.evolve_cli import flag_list, split_overrides

    search, sft, ppm, pairs = split_overrides(["iterations=2", "teacher.n_generate_sample=3", "ppm.bf16=true"])
    assert search["teacher"] == ["iterations=2", "n_generate_sample=3"] and search["policy"] == ["iterations=2"]
    assert flag_list(ppm) == ["--bf16"] and sft == {} and pairs == {}
    with pytest.raises(SearchConfigError, match="no config 'polcy'"):
        split_overrides(["polcy.iterations=2"])
    with pytest.raises(SearchConfigError, match="not a pair option"):
        split_overrides(["pairs.margin=1"])
