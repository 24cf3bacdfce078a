"""Checkpoints of a CPU run, in verl's layout: `<run dir>/global_step_<N>/` plus a
`latest_checkpointed_iteration.txt` naming the newest one.

A checkpoint holds the model and tokenizer (`save_pretrained`, so it is also a model folder to evaluate or
`--model` from), the optimizer state and `state.json` (the step and the RNG states), so `--resume` continues with
the same data order and the same random stream as an uninterrupted run.
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


def save(run_dir: Path, step: int, model, tokenizer, optimizer) -> Path:
    """Write global_step_<step> (atomically: a crash leaves the previous checkpoint as the latest)."""
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
    return target


def restore_training_state(path: Path, optimizer) -> dict:
    """Load the optimizer and RNG states of a checkpoint (the model is loaded from `path` itself)."""
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    return json.loads((path / "state.json").read_text())
