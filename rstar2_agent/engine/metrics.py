"""What a CPU run reports: a one-line summary per step on the console, every metric to a JSONL file, to any
backend of verl's own `Tracking` (wandb, tensorboard, mlflow, swanlab, ...: `trainer.logger` takes the names
verl's trainer takes), and a PNG of the curves.

The console line and `metrics.jsonl` (one flat `{"step": N, key: value, ...}` object per line, what the
benchmarks and the plot read) are ours; verl's console logger prints every metric and its `file` logger nests
them under "data". Everything else goes through `verl.utils.tracking.Tracking`, with its files kept in the run
directory unless the environment says otherwise (WANDB_DIR, TENSORBOARD_DIR, VERL_FILE_LOGGER_PATH) and wandb
offline unless WANDB_MODE says otherwise: a CPU run never reaches out to a server by default.

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

OURS = ("console", "jsonl")


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


def tracking_backends() -> list[str]:
    from verl.utils.tracking import Tracking

    return list(Tracking.supported_backend)


def _reset_wandb() -> None:
    """Drop wandb's process-wide settings (read from the environment at its first setup and kept), so the
    next `wandb.init` sees this run's WANDB_DIR and WANDB_MODE: verl's Tracking passes no `dir` or `mode`."""
    import wandb

    wandb.teardown()


# where each verl backend writes, and the run-directory default we give it when the environment names none
_BACKEND_PATHS = {"wandb": ("WANDB_DIR", ""), "tensorboard": ("TENSORBOARD_DIR", "tensorboard"),
                  "file": ("VERL_FILE_LOGGER_PATH", "verl_metrics.jsonl")}


class MetricsLog:
    def __init__(self, run_dir: Path, loggers: Sequence[str], project: str, experiment: str, config: dict,
                 echo: Callable[[str], None] = print):
        known = list(OURS) + tracking_backends()
        unknown = sorted(set(loggers) - set(known))
        if unknown:
            raise ValueError(f"unknown trainer.logger entries {unknown}; known: {known}")
        self.path = Path(run_dir) / "metrics.jsonl"
        self.jsonl = "jsonl" in loggers
        self.console = "console" in loggers
        self.echo = echo
        verl_backends = [name for name in loggers if name not in OURS]
        self.tracking = self._start_tracking(Path(run_dir), verl_backends, project, experiment, config) \
            if verl_backends else None

    def _start_tracking(self, run_dir: Path, backends: list[str], project: str, experiment: str, config: dict):
        from verl.utils.tracking import Tracking

        env = {"WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}  # never reach a server unless asked to
        for name in backends:
            if name in _BACKEND_PATHS:
                key, default = _BACKEND_PATHS[name]
                env[key] = os.environ.get(key, str(run_dir / default) if default else str(run_dir))
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        if "wandb" in backends:
            _reset_wandb()  # wandb reads WANDB_DIR / WANDB_MODE once per process, at its first setup
        try:  # verl reads config["trainer"] (wandb_proxy) whenever a config is given
            tracking = Tracking(project, experiment, default_backend=backends, config={"trainer": {}, **config})
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if "wandb" in backends:
            self.echo(f"wandb ({env['WANDB_MODE']}): {tracking.logger['wandb'].run.dir}")
        return tracking

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        if self.jsonl:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.tracking is not None:
            self.tracking.log(clean, step=step)

    def say(self, line: str) -> None:
        if self.console:
            self.echo(line)

    def close(self) -> None:
        if self.tracking is not None:
            wandb_used = "wandb" in self.tracking.logger
            self.tracking.finish()
            self.tracking = None
            if wandb_used:
                _reset_wandb()  # the next run in this process reads its own settings


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
