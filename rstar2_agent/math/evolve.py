"""One rStar-Math self-evolution round as resumable phases (skeleton of ``rstar2-agent math evolve``).

A round ``r`` lives in ``<workdir>/round_<r>/`` and runs these phases, each skipped when its output is there
already (an interrupted round resumes at the first unfinished phase; the search itself also resumes per
question, :mod:`.records`):

==========  ==========================================  ==============================================
phase       does                                         done when
==========  ==========================================  ==============================================
search      search the training questions                ``trees.jsonl`` holds every question
            (round 1: the teacher, ``sample_mcts``;
            later: policy + PPM, ``sft_sample_mcts``)
extract     :func:`.extract.sft_examples` and            ``sft.jsonl`` and ``pairs.jsonl`` exist
            :func:`.extract.extract_pairs`
sft         :func:`.sft.train_sft` from the policy        ``policy/config.json`` exists
            the round started with
ppm         :func:`.ppm_train.train_ppm` from the new     ``ppm/value_head.bin`` exists
            policy (upstream: the PPM starts from the
            SFT policy)
==========  ==========================================  ==============================================

A round whose search found nothing to learn from carries over instead of training (training on no rows would
fail, and the next round still needs a policy and a PPM where it looks for them):

* ``sft.jsonl`` has no rows (no question got a correct, error-free trace): the policy the round started with
  is copied to ``policy/``; the sft metrics line says ``"carried_over": true`` and why, and a warning is
  printed.
* ``pairs.jsonl`` has no rows (no question had both a correct and a wrong step under one node): the previous
  round's PPM (``ppm_in``) is copied to ``ppm/`` in the same way; with no previous PPM (round 1) the round
  stops with :class:`NoPairsError` right after extraction, before any training.

A carried-over folder is a plain copy, so resume and the next round treat it like a trained one.

Each phase appends one line to ``<workdir>/metrics.jsonl`` (round, phase, seconds, counts, training
metrics; ``"skipped": true`` on a resumed phase). The generator (teacher or policy backend) and the code
executor are passed in, so the same round runs on the code judge with a real model or, in the tests, with a
scripted generator and an in-test executor.

:func:`evaluate_round` searches held-out questions with each of several configs (e.g. greedy,
beam+PPM, MCTS+PPM) into ``eval_<name>.jsonl`` (resumable) and logs each one's pass@1 (best-valued terminal,
:func:`.metrics.pass_at_1`).

The command ``rstar2-agent math evolve`` (its default preset, wandb, the PNG and the progress bars) is
:mod:`.evolve_cli`; the scripted round-1 teacher is :mod:`.teacher`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from rstar2_agent.math.config import SearchConfig
from rstar2_agent.math.records import pending_items

__all__ = ["RoundLayout", "NoPairsError", "round_layout", "append_metrics", "run_phase", "flags_namespace",
           "has_rows", "copy_folder", "carry_over", "no_pairs_message", "evolve_round", "evaluate_round"]


@dataclass(frozen=True)
class RoundLayout:
    """The files of one round."""

    dir: Path
    trees: Path
    sft: Path
    pairs: Path
    policy: Path
    ppm: Path


def round_layout(workdir: str | Path, round_no: int) -> RoundLayout:
    """``<workdir>/round_<NN>/`` and its files.

    >>> round_layout("/w", 2).policy.as_posix()
    '/w/round_02/policy'
    """
    d = Path(workdir) / f"round_{round_no:02d}"
    return RoundLayout(d, d / "trees.jsonl", d / "sft.jsonl", d / "pairs.jsonl", d / "policy", d / "ppm")


def append_metrics(path: Path, line: dict) -> None:
    """One JSON line, flushed (the log of a run that may be interrupted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def run_phase(name: str, round_no: int, done: Callable[[], bool], work: Callable[[], Optional[dict]],
              metrics: Path, on_phase: Optional[Callable[[str], None]] = None) -> bool:
    """Run ``work`` unless ``done()``; log the phase either way. True when it ran. ``on_phase(name)`` is
    called first (the command's progress bar)."""
    if on_phase is not None:
        on_phase(name)
    if done():
        append_metrics(metrics, {"round": round_no, "phase": name, "skipped": True})
        return False
    started = time.monotonic()
    result = work() or {}
    append_metrics(metrics, {"round": round_no, "phase": name, "seconds": round(time.monotonic() - started, 3),
                             **result})
    return True


class NoPairsError(ValueError):
    """A round extracted no preference pairs and there is no earlier PPM to carry over."""


def has_rows(path: Path) -> bool:
    """True when the data file :func:`.extract.write_rows` wrote holds at least one row (JSONL: a non-blank
    line; ``.json``: a non-empty list). Decides whether a training phase has anything to train on.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text("\\n"); _ = (d / "b.jsonl").write_text('{"query": "q"}\\n')
    >>> has_rows(d / "a.jsonl"), has_rows(d / "b.jsonl")
    (False, True)
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return bool(json.loads(text or "[]"))
    return any(line.strip() for line in text.splitlines())


def copy_folder(src: str | Path, dst: Path) -> None:
    """Copy the model folder ``src`` to ``dst`` through a temporary sibling renamed at the end, so an
    interrupted copy never looks like a finished phase (the phases' done checks look for files in ``dst``)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: cannot carry it over, not a local model folder")
    partial = dst.with_name(dst.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(src, partial)
    if dst.exists():
        shutil.rmtree(dst)
    partial.rename(dst)


def carry_over(src: str | Path, dst: Path, round_no: int, reason: str,
               warn: Callable[[str], None]) -> dict:
    """Copy ``src`` to ``dst`` instead of training, warn, and return the phase's metrics fields."""
    copy_folder(src, dst)
    warn(f"round {round_no}: {reason} unchanged ({src} -> {dst})")
    return {"carried_over": True, "reason": reason, "from": str(src)}


def no_pairs_message(round_no: int, pairs: Path) -> str:
    """What happened and what to do when a round has no pairs and no earlier PPM.

    >>> print(no_pairs_message(1, Path("out/round_01/pairs.jsonl")))  # doctest: +ELLIPSIS
    round 1: no preference pairs in out/round_01/pairs.jsonl ... remove out/round_01 and rerun ...
    """
    return (f"round {round_no}: no preference pairs in {pairs} (no question had both a correct and a wrong step "
            f"under one node) and no earlier PPM to carry over, so there is no PPM to train or keep; remove "
            f"{pairs.parent} and rerun with more questions (--train-limit), more search (iterations=, "
            f"n_generate_sample=) or a teacher that makes mistakes")


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def flags_namespace(add_flags: Callable, defaults: dict, required: Sequence[str], extra: Sequence[str] = ()):
    """The parsed training flags (:func:`.ppm_train.add_training_flags`) of ``required + extra``: a round
    trains with exactly the flags ``rstar2-agent math sft|ppm`` takes."""
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser, defaults)
    return parser.parse_args([*required, *extra])


def evolve_round(workdir: str | Path, round_no: int, items: Sequence[dict], policy_in: str | Path,
                 generator, executor, search_cfg: SearchConfig, value_model=None,
                 sft_flags: Sequence[str] = (), ppm_flags: Sequence[str] = (), sft_n: int = 2,
                 pair_options: Optional[dict] = None, on_phase: Optional[Callable[[str], None]] = None,
                 ppm_in: str | Path | None = None, warn: Callable[[str], None] = _stderr_warning
                 ) -> RoundLayout:
    """Search, extract, train the policy and the PPM for one round (see the module docstring). ``ppm_in``: the
    previous round's PPM folder (None in round 1), carried over when the round has no pairs; ``warn`` gets
    the carry-over warnings (default: stderr)."""
    from rstar2_agent.math import extract, ppm_train, sft
    from rstar2_agent.math.run import search_items

    layout = round_layout(workdir, round_no)
    layout.dir.mkdir(parents=True, exist_ok=True)
    metrics = Path(workdir) / "metrics.jsonl"

    def search() -> dict:
        stats = search_items(list(items), search_cfg, generator, executor, layout.trees, value_model,
                             log=lambda _: None)
        return {"questions": len(items), "nodes": stats.nodes, "judge_calls": stats.run_calls}

    def extract_data() -> dict:
        records = extract.load_tree_records(layout.trees)
        sft_rows = extract.sft_examples(records, n=sft_n, step_delim=search_cfg.step_delim)
        pairs = extract.extract_pairs(records, step_delim=search_cfg.step_delim, **(pair_options or {}))
        extract.write_rows(layout.sft, sft_rows)
        extract.write_rows(layout.pairs, pairs)
        return {"sft_examples": len(sft_rows), "pairs": len(pairs)}

    def train_policy() -> dict:
        if not has_rows(layout.sft):
            return carry_over(policy_in, layout.policy, round_no,
                              "no correct trace to train on; the policy is carried over", warn)
        args = flags_namespace(ppm_train.add_training_flags, sft.SFT_DEFAULTS,
                               ["--model_name_or_path", str(policy_in), "--train_file", str(layout.sft),
                                "--output_dir", str(layout.policy)], sft_flags)
        return sft.train_sft(args.model_name_or_path, args.train_file, ppm_train.training_arguments(args),
                             max_length=args.max_length, add_tokens=not args.no_special_tokens)

    def train_ppm() -> dict:
        if not has_rows(layout.pairs):
            return carry_over(ppm_in, layout.ppm, round_no,
                              "no preference pairs to train on; the previous PPM is carried over", warn)
        args = flags_namespace(ppm_train.add_training_flags, ppm_train.PPM_DEFAULTS,
                               ["--model_name_or_path", str(layout.policy), "--train_file", str(layout.pairs),
                                "--output_dir", str(layout.ppm)], ppm_flags)
        return ppm_train.train_ppm(args.model_name_or_path, args.train_file, ppm_train.training_arguments(args),
                                   max_length=args.max_length, add_tokens=not args.no_special_tokens)

    run_phase("search", round_no, lambda: layout.trees.exists() and not pending_items(items, layout.trees),
              search, metrics, on_phase)
    run_phase("extract", round_no, lambda: layout.sft.exists() and layout.pairs.exists(), extract_data, metrics,
              on_phase)

    def ppm_done() -> bool:
        return (layout.ppm / "value_head.bin").exists()

    if ppm_in is None and not ppm_done() and not has_rows(layout.pairs):
        raise NoPairsError(no_pairs_message(round_no, layout.pairs))  # before the SFT spends its time
    run_phase("sft", round_no, lambda: (layout.policy / "config.json").exists(), train_policy, metrics, on_phase)
    run_phase("ppm", round_no, ppm_done, train_ppm, metrics, on_phase)
    return layout


def evaluate_round(workdir: str | Path, round_no: int, items: Sequence[dict], generator, executor,
                   configs: dict[str, SearchConfig], value_model=None) -> dict[str, float]:
    """pass@1 of each named search config on ``items``; one ``eval`` metrics line per config."""
    from rstar2_agent.math.metrics import pass_at_1
    from rstar2_agent.math.records import read_records
    from rstar2_agent.math.run import search_items

    layout = round_layout(workdir, round_no)
    questions = {str(item["question"]) for item in items}
    scores = {}
    for name, cfg in configs.items():
        output = layout.dir / f"eval_{name}.jsonl"
        started = time.monotonic()
        search_items(list(items), cfg, generator, executor, output, value_model if cfg.need_value_func else None,
                     log=lambda _: None)
        records = [r for r in read_records(output) if str(r["question"]) in questions]
        scores[name] = pass_at_1(records)
        append_metrics(Path(workdir) / "metrics.jsonl",
                       {"round": round_no, "phase": "eval", "mode": name, "questions": len(records),
                        "pass@1": scores[name], "seconds": round(time.monotonic() - started, 3)})
    return scores
