"""What a CPU run reports: a one-line summary per step on the console, every metric to a JSONL file and to
wandb (offline unless WANDB_MODE says otherwise, only when installed and asked for), and a PNG of the curves.

    log = MetricsLog(run_dir, ["console", "jsonl", "wandb"], project="rstar2-agent", experiment="cpu", config={})
    log.log(3, {"train/reward_mean": 0.4, ...})   # appends {"step": 3, ...} to run_dir/metrics.jsonl
    log.close()
    plot_metrics(run_dir / "metrics.jsonl", run_dir / "curves.png")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

LOGGERS = ("console", "jsonl", "wandb")


def format_duration(seconds: float) -> str:
    """
    >>> format_duration(7.2), format_duration(125), format_duration(3725)
    ('7.2s', '2m05s', '1h02m05s')
    """
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def step_summary(step: int, total: int, m: Mapping[str, float]) -> str:
    """The one-line summary of a training step.

    >>> step_summary(3, 8, {"train/reward_mean": 0.406, "train/accuracy": 0.406, "train/tool_calls_per_traj": 1.2,
    ...     "train/tool_error_ratio": 0.05, "train/kept_traces": 14, "train/traces": 32, "perf/tokens_per_s": 96.3,
    ...     "timing/step_s": 112.0})
    'step 3/8 | reward 0.406 | acc 0.406 | tool calls/traj 1.20 | tool err 0.050 | kept 14/32 | 96 tok/s | 1m52s'

    Trajectories the sandbox failed (``rollout/infra_errors``, left out of everything else) are named when any:

    >>> step_summary(3, 8, {"train/reward_mean": 0.5, "train/accuracy": 0.5, "train/tool_calls_per_traj": 1.0,
    ...     "train/tool_error_ratio": 0.0, "train/kept_traces": 2, "train/traces": 2, "perf/tokens_per_s": 90.0,
    ...     "timing/step_s": 60.0, "rollout/infra_errors": 2}).split(" | ")[-1]
    '2 infra errors (not trained)'
    """
    infra = int(m.get("rollout/infra_errors", 0))
    return (f"step {step}/{total} | reward {m['train/reward_mean']:.3f} | acc {m['train/accuracy']:.3f} | "
            f"tool calls/traj {m['train/tool_calls_per_traj']:.2f} | tool err {m['train/tool_error_ratio']:.3f} | "
            f"kept {int(m['train/kept_traces'])}/{int(m['train/traces'])} | {m['perf/tokens_per_s']:.0f} tok/s | "
            f"{format_duration(m['timing/step_s'])}"
            + (f" | {infra} infra errors (not trained)" if infra else ""))


def val_summary(step: int, m: Mapping[str, float]) -> str:
    """
    >>> val_summary(0, {"val/accuracy": 0.25, "val/tool_calls_per_traj": 0.9, "val/size": 40})
    'validation @ step 0 | accuracy 0.250 on 40 held-out problems | tool calls/traj 0.90'
    """
    return (f"validation @ step {step} | accuracy {m['val/accuracy']:.3f} on {int(m['val/size'])} held-out problems"
            f" | tool calls/traj {m['val/tool_calls_per_traj']:.2f}")


class MetricsLog:
    def __init__(self, run_dir: Path, loggers: Sequence[str], project: str, experiment: str, config: dict,
                 echo: Callable[[str], None] = print):
        unknown = sorted(set(loggers) - set(LOGGERS))
        if unknown:
            raise ValueError(f"unknown trainer.logger entries {unknown}; known: {list(LOGGERS)}")
        self.path = Path(run_dir) / "metrics.jsonl"
        self.jsonl = "jsonl" in loggers
        self.console = "console" in loggers
        self.echo = echo
        self.wandb = self._start_wandb(run_dir, project, experiment, config) if "wandb" in loggers else None

    def _start_wandb(self, run_dir: Path, project: str, experiment: str, config: dict):
        try:
            import wandb
        except ImportError:
            self.echo("wandb is not installed: metrics go to the console and metrics.jsonl only")
            return None
        mode = os.environ.get("WANDB_MODE", "offline")  # never reach out to a server unless asked to
        run = wandb.init(project=project, name=experiment, config=config, dir=str(run_dir), mode=mode,
                         reinit="finish_previous")
        self.echo(f"wandb ({mode}): {run.dir}")
        return run

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        if self.jsonl:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.wandb is not None:
            self.wandb.log(clean, step=step)

    def say(self, line: str) -> None:
        if self.console:
            self.echo(line)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


PANELS = (
    ("train reward, held-out accuracy", ("train/reward_mean", "val/accuracy")),
    ("tool use", ("train/tool_calls_per_traj", "train/tool_error_ratio")),
    ("GRPO-RoC", ("train/kept_traces", "train/traces")),
    ("time per step (s)", ("timing/rollout_s", "timing/reward_s", "timing/update_s")),
)


def plot_metrics(jsonl: Path, png: Path, title: Optional[str] = None) -> Path:
    """A 2x2 figure of the curves in `jsonl` (one point per logged step that has the key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(jsonl)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, keys) in zip(axes.flat, PANELS):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=key)  # the full key: train/ and val/ curves share a panel
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title or "rstar2-agent CPU run")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return Path(png)
