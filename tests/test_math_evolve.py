"""One self-evolution round: search with a scripted teacher, extract, SFT and PPM training on the tiny model;
every phase logged; a rerun resumes (skips finished phases, redoes a missing one); a round with nothing to
learn from carries the policy / PPM over (or stops clearly in round 1); two rounds chained as the command chains
them; the `math evolve` command end to end (tiny model, tiny limits, the code judge): metrics, wandb offline,
the PNG, resume."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from rstar2_agent.math import evolve
from rstar2_agent.math.backends import TransformersGenerator
from rstar2_agent.math.config import SearchConfig
from rstar2_agent.math.extract import read_rows
from rstar2_agent.math.ppm import PPMScorer
from rstar2_agent.math.records import read_records
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


CFG = SearchConfig(n_generate_sample=2, iterations=4, max_depth=6, is_sampling=True, errors_threshold=1,
                   save_intermediate_rollouts=False)
FLAGS = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
         "--learning_rate", "1e-3", "--save_strategy", "no"]


def test_doctests():
    import doctest

    from rstar2_agent.math import evolve_cli

    for module in (evolve, evolve_cli):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def added_tokens(model_dir) -> set[str]:
    """The step-format markers the tokenizer saved in ``model_dir`` holds as added tokens."""
    from transformers import AutoTokenizer

    from rstar2_agent.math.sft import SFT_TOKENS

    return set(AutoTokenizer.from_pretrained(str(model_dir)).get_added_vocab()) & set(SFT_TOKENS)


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
    assert "<end_of_step>" in added_tokens(layout.policy) and "<end_of_step>" in added_tokens(layout.ppm)

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
    # the CPU preset keeps the step markers as plain text (evolve_cli.SFT_FLAGS): no added token in either model
    assert not added_tokens(round1 / "policy") and not added_tokens(round1 / "ppm")
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


# ---------------------------------------------------------------- rounds with nothing to learn from


class ErrorWordTeacher(Teacher):
    """As :class:`Teacher`, but the code says "error" in a comment: the correct traces are not SFT material
    (a trace containing "error" is skipped) while the pairs (right code step vs wrong answer) are still there."""

    def generate(self, prompts, n, params):
        out = super().generate(prompts, n, params)
        return [[replace(c, text=c.text.replace("print(x)\n", "print(x)  # error-free\n")) for c in row]
                for row in out]


class WrongTeacher(Teacher):
    """As :class:`Teacher`, but every answer is wrong: no correct trace and no pair anywhere."""

    def generate(self, prompts, n, params):
        out = super().generate(prompts, n, params)
        for p, row in zip(prompts, out):
            k = int(re.search(r"What is (\d)\+", p).group(1))
            for i, c in enumerate(row):
                row[i] = replace(c, text=c.text.replace(f"\\boxed{{{2 * k}}}", f"\\boxed{{{2 * k + 3}}}"))
        return out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics_lines(work: Path) -> list[dict]:
    return [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]


def fake_ppm(folder: Path) -> Path:
    """An earlier round's PPM as the phases see it: a model folder plus ``value_head.bin`` (never loaded here)."""
    save_tiny(str(folder), seed=1)
    (folder / "value_head.bin").write_bytes(b"earlier round's value head")
    return folder


def test_no_correct_trace_carries_the_policy_over_and_the_ppm_still_trains(tmp_path, capsys):
    policy = save_tiny(str(tmp_path / "policy0"), seed=0)
    work = tmp_path / "evolve"
    layout = evolve.evolve_round(work, 2, ITEMS, policy, ErrorWordTeacher(), InTestExecutor(), CFG,
                                 sft_flags=FLAGS, ppm_flags=FLAGS)
    lines = metrics_lines(work)
    assert [(x["phase"], x.get("skipped", False)) for x in lines] == [
        ("search", False), ("extract", False), ("sft", False), ("ppm", False)]
    assert (lines[1]["sft_examples"], lines[1]["pairs"]) == (0, 3)
    assert lines[2]["carried_over"] is True and "no correct trace" in lines[2]["reason"]
    assert "steps" not in lines[2]  # nothing trained
    assert folder_bytes(layout.policy) == folder_bytes(Path(policy))  # the input policy, unchanged
    assert not layout.policy.with_name("policy.partial").exists()
    assert lines[3]["steps"] == 2 and "carried_over" not in lines[3]  # the PPM trains from the carried policy
    assert "round 2: no correct trace to train on" in capsys.readouterr().err
    TransformersGenerator.from_pretrained(str(layout.policy))  # the next round loads it as any policy

    # a rerun skips the carried-over phase like a trained one
    evolve.evolve_round(work, 2, ITEMS, policy, ErrorWordTeacher(), InTestExecutor(), CFG,
                        sft_flags=FLAGS, ppm_flags=FLAGS)
    assert [(x["phase"], x.get("skipped", False)) for x in metrics_lines(work)[4:]] == [
        ("search", True), ("extract", True), ("sft", True), ("ppm", True)]


def test_no_pairs_stops_in_round_one_and_carries_an_earlier_ppm_over(tmp_path, capsys):
    policy = save_tiny(str(tmp_path / "policy0"), seed=0)
    work = tmp_path / "evolve"
    with pytest.raises(evolve.NoPairsError, match=r"round 1: no preference pairs in .*pairs\.jsonl .*both a "
                                                  r"correct and a wrong step.*no earlier PPM.*a teacher that "
                                                  r"makes mistakes"):
        evolve.evolve_round(work, 1, ITEMS, policy, WrongTeacher(), InTestExecutor(), CFG,
                            sft_flags=FLAGS, ppm_flags=FLAGS)
    assert [x["phase"] for x in metrics_lines(work)] == ["search", "extract"]  # stopped before any training
    assert metrics_lines(work)[1]["pairs"] == 0
    layout = evolve.round_layout(work, 1)
    assert not layout.policy.exists() and not layout.ppm.exists()

    # with an earlier round's PPM the same round goes on: policy and PPM both carried over
    ppm_in = fake_ppm(tmp_path / "ppm_earlier")
    evolve.evolve_round(work, 1, ITEMS, policy, WrongTeacher(), InTestExecutor(), CFG, sft_flags=FLAGS,
                        ppm_flags=FLAGS, ppm_in=ppm_in)
    lines = metrics_lines(work)[2:]
    assert [(x["phase"], x.get("skipped", False)) for x in lines] == [
        ("search", True), ("extract", True), ("sft", False), ("ppm", False)]
    assert lines[2]["carried_over"] is True and lines[3]["carried_over"] is True
    assert "no preference pairs" in lines[3]["reason"] and lines[3]["from"] == str(ppm_in)
    assert folder_bytes(layout.ppm) == folder_bytes(ppm_in)
    assert folder_bytes(layout.policy) == folder_bytes(Path(policy))
    err = capsys.readouterr().err
    assert "round 1: no correct trace" in err and "round 1: no preference pairs to train on" in err


def test_no_pairs_error_reaches_the_command_as_an_error_line(monkeypatch):
    """`math evolve` turns NoPairsError (a ValueError) into `error: <message>`, no traceback."""
    from rstar2_agent.math import evolve_cli

    def no_pairs(args):
        raise evolve.NoPairsError(evolve.no_pairs_message(1, Path("run/round_01/pairs.jsonl")))

    monkeypatch.setattr(evolve_cli, "run_evolve", no_pairs)
    with pytest.raises(SystemExit, match=r"^error: round 1: no preference pairs in run/round_01/pairs\.jsonl"):
        evolve_cli.run_evolve_command(argparse.Namespace(rounds=1))


# ---------------------------------------------------------------- two rounds chained


class TeacherCodeExecutor(InTestExecutor):
    """Runs only code the scripted teacher writes; anything else (the round-2 policy's samples) gets an error
    observation instead of being executed."""

    TEACHER_LINE = re.compile(r"(x = \d \+ \d|print\(x\))?")

    def run(self, codes):
        ours = [all(self.TEACHER_LINE.fullmatch(line) for line in c.splitlines()) for c in codes]
        return [InTestExecutor.run(self, [c])[0] if mine else "NameError: not run" for c, mine in zip(codes, ours)]


def test_two_rounds_chained_as_the_command_chains_them(tmp_path):
    """Round 1 searches with the teacher; round 2 with round 1's policy + PPM (:func:`.evolve_cli.round_searcher`,
    sft_sample_mcts-like: PPM-valued MCTS) and starts its SFT from round 1's policy."""
    from rstar2_agent.math import evolve_cli

    policy0 = save_tiny(str(tmp_path / "policy0"), seed=0)
    configs = {"teacher": CFG,
               "policy": SearchConfig(n_generate_sample=2, iterations=2, max_depth=3, max_tokens=12,
                                      is_sampling=True, need_value_func=True, update_leaf_value=True,
                                      errors_threshold=1, save_intermediate_rollouts=False)}
    work = tmp_path / "evolve"
    policy_in, ppm_in, layouts = policy0, None, {}
    for r in (1, 2):
        generator, value_model, cfg = evolve_cli.round_searcher(r, Teacher(), policy_in, ppm_in, configs,
                                                                "transformers")
        layouts[r] = evolve.evolve_round(work, r, ITEMS, policy_in, generator, TeacherCodeExecutor(), cfg,
                                         value_model, sft_flags=FLAGS, ppm_flags=FLAGS, ppm_in=ppm_in)
        if r == 2:  # the search really ran on round 1's models
            assert generator.obj is not None and value_model.obj is not None
        policy_in, ppm_in = layouts[r].policy, layouts[r].ppm
    lines = metrics_lines(work)
    assert [(x["round"], x["phase"], x.get("skipped", False)) for x in lines] == [
        (r, phase, False) for r in (1, 2) for phase in ("search", "extract", "sft", "ppm")]
    assert {str(rec["question"]) for rec in read_records(layouts[2].trees)} == {x["question"] for x in ITEMS}
    assert layouts[2].sft.is_file() and layouts[2].pairs.is_file()
    assert (layouts[2].policy / "config.json").is_file() and (layouts[2].ppm / "value_head.bin").is_file()
    assert (lines[1]["sft_examples"], lines[1]["pairs"]) == (3, 3) and lines[2]["steps"] == lines[3]["steps"] == 2
    # round 2's tiny policy (two SFT steps) writes noise: no correct trace, no pair. Before the carry-over this
    # crashed in the sft phase; now round 1's policy and PPM go on, byte for byte
    assert (lines[5]["sft_examples"], lines[5]["pairs"]) == (0, 0)
    assert lines[6]["carried_over"] is True and lines[6]["from"] == str(layouts[1].policy)
    assert lines[7]["carried_over"] is True and lines[7]["from"] == str(layouts[1].ppm)
    assert folder_bytes(layouts[2].policy) == folder_bytes(layouts[1].policy)
    assert folder_bytes(layouts[2].ppm) == folder_bytes(layouts[1].ppm)
    # the PPM valued round 2's new nodes (a value that is neither 0 nor a terminal's +-1)
    values = [node["value"] for rec in read_records(layouts[2].trees) for node in rec["rstar"].values()]
    assert any(v not in (0.0, 1.0, -1.0) for v in values)
    TransformersGenerator.from_pretrained(str(layouts[2].policy))
    assert len(PPMScorer.from_pretrained(layouts[2].ppm).score(["<code>\nx = 1\n<end_of_step>\n"])) == 1


def test_the_command_passes_each_round_the_previous_policy_and_ppm(tmp_path, monkeypatch):
    """run_evolve's loop: round 1 gets the starting model and no PPM (ppm_in None), round r the folders of round
    r - 1 (the rounds themselves are recorded, not run)."""
    from rstar2_agent.math import evolve_cli

    calls = []

    def fake_round(workdir, round_no, items, policy_in, generator, executor, cfg, value_model=None, **kw):
        calls.append((round_no, str(policy_in), kw["ppm_in"] and str(kw["ppm_in"]), generator, value_model))
        return evolve.round_layout(workdir, round_no)

    monkeypatch.setattr(evolve, "evolve_round", fake_round)
    monkeypatch.setattr(evolve_cli, "_heldout_pairs", lambda *a, **k: [])
    monkeypatch.setattr(evolve_cli, "_ppm_heldout", lambda *a, **k: None)
    parser = argparse.ArgumentParser()
    evolve_cli.add_arguments(parser)
    out = tmp_path / "run"
    args = parser.parse_args(["--rounds", "3", "--out", str(out), "--model", "MODEL", "--train-limit", "2",
                              "--modes", "", "--logger", "none"])
    evolve_cli.run_evolve(args, executor=InTestExecutor(), log=lambda _: None)
    assert [c[:3] for c in calls] == [
        (1, "MODEL", None),
        (2, str(out / "round_01" / "policy"), str(out / "round_01" / "ppm")),
        (3, str(out / "round_02" / "policy"), str(out / "round_02" / "ppm"))]
    assert calls[0][4] is None and all(isinstance(c[3], evolve_cli.Lazy) and isinstance(c[4], evolve_cli.Lazy)
                                       for c in calls[1:])
