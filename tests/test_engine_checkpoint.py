"""The CPU engine's checkpoints: only the newest `trainer.max_actor_ckpt_to_keep` stay, and resume still works."""

from __future__ import annotations

import torch

from rstar2_agent.engine import checkpoint
from rstar2_agent.engine.config import compose
from rstar2_agent.engine.tiny import build_model, build_tokenizer


def _parts():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    return model, tokenizer, torch.optim.AdamW(model.parameters(), lr=1e-3)


def test_the_default_keeps_two_and_null_keeps_all():
    assert compose("cpu_trainer").trainer.max_actor_ckpt_to_keep == 2
    assert compose("cpu_trainer", ["trainer.max_actor_ckpt_to_keep=null"]).trainer.max_actor_ckpt_to_keep is None


def test_save_deletes_the_oldest_beyond_the_limit_and_resume_reads_the_latest(tmp_path):
    model, tokenizer, optimizer = _parts()
    for step in (0, 2, 4, 6):
        checkpoint.save(tmp_path, step, model, tokenizer, optimizer, keep=2)
    assert sorted(p.name for p in tmp_path.glob("global_step_*")) == ["global_step_4", "global_step_6"]
    assert checkpoint.latest_step(tmp_path) == 6
    state = checkpoint.restore_training_state(tmp_path / "global_step_6", optimizer)
    assert state["step"] == 6
    assert (tmp_path / "global_step_6" / "config.json").exists()  # still a model folder


def test_keep_one_keeps_only_the_one_just_saved_even_when_older_steps_have_higher_numbers(tmp_path):
    model, tokenizer, optimizer = _parts()
    checkpoint.save(tmp_path, 5, model, tokenizer, optimizer, keep=None)
    checkpoint.save(tmp_path, 3, model, tokenizer, optimizer, keep=1)  # e.g. a run restarted into the folder
    assert [p.name for p in tmp_path.glob("global_step_*")] == ["global_step_3"]
    assert checkpoint.latest_step(tmp_path) == 3


def test_null_or_non_positive_keeps_everything(tmp_path):
    model, tokenizer, optimizer = _parts()
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, model, tokenizer, optimizer, keep=0 if step == 3 else None)
    assert checkpoint.saved_steps(tmp_path) == [1, 2, 3]
    assert checkpoint.prune(tmp_path, keep=2, newest=3) == [1]
    assert checkpoint.saved_steps(tmp_path) == [2, 3]
