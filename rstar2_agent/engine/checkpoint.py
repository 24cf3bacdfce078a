"""Checkpoints of a CPU run, in verl's layout: `<run dir>/global_step_<N>/` plus a
`latest_checkpointed_iteration.txt` naming the newest one.

A checkpoint holds the model and tokenizer (`save_pretrained`, so it is also a model folder to evaluate or
`--model` from), the optimizer state and `state.json` (the step and the RNG states), so `--resume` continues with
the same data order and the same random stream as an uninterrupted run.

Only the newest `keep` checkpoints stay on disk (`trainer.max_actor_ckpt_to_keep`, default 2; null or <= 0: all, as
verl's null): each one of SmolLM2-135M is about 1.6 GB (fp32 weights plus Adam moments).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

LATEST = "latest_checkpointed_iteration.txt"


def latest_step(run_dir: Path) -> Optional[int]:
    marker = Path(run_dir) / LATEST
    if not marker.exists():
        return None
    step = int(marker.read_text().strip())
    return step if (Path(run_dir) / f"global_step_{step}" / "state.json").exists() else None


def saved_steps(run_dir: Path) -> list[int]:
    """The steps that have a complete checkpoint folder in `run_dir`, oldest first."""
    steps = []
    for path in Path(run_dir).glob("global_step_*"):
        suffix = path.name[len("global_step_"):]
        if suffix.isdigit() and (path / "state.json").exists():
            steps.append(int(suffix))
    return sorted(steps)


def prune(run_dir: Path, keep: Optional[int], newest: int) -> list[int]:
    """Delete the oldest checkpoint folders so that at most `keep` stay (null or <= 0: keep all). `newest`, the
    one just saved, is never deleted. Returns the deleted steps."""
    if keep is None or keep <= 0:
        return []
    older = [s for s in saved_steps(run_dir) if s != newest]
    doomed = older[: max(0, len(older) - (keep - 1))]
    for step in doomed:
        shutil.rmtree(Path(run_dir) / f"global_step_{step}", ignore_errors=True)
    return doomed


def save(run_dir: Path, step: int, model, tokenizer, optimizer, keep: Optional[int] = None) -> Path:
    """Write global_step_<step> (atomically: a crash leaves the previous checkpoint as the latest), then delete
    older ones beyond the newest `keep` (see `prune`; only once the new one is the latest)."""
    target = Path(run_dir) / f"global_step_{step}"
    staging = Path(run_dir) / f".global_step_{step}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(rng, staging / "rng.pt")
    (staging / "state.json").write_text(json.dumps({"step": step}, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    (Path(run_dir) / LATEST).write_text(str(step))
    prune(run_dir, keep, step)
    return target


def restore_training_state(path: Path, optimizer) -> dict:
    """Load the optimizer and RNG states of a checkpoint (the model is loaded from `path` itself)."""
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    return json.loads((path / "state.json").read_text())
