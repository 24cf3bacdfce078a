"""`rstar2-agent train`: the CPU engine on a CPU config, verl's trainer on any other.

    rstar2-agent train                                              # cpu_trainer: SmolLM2-135M on CPU
    rstar2-agent train --config-name cpu_trainer_tiny               # the test-sized preset
    rstar2-agent train trainer.total_training_steps=20 --resume     # Hydra overrides, continue a run
    rstar2-agent train --config-name rstar2_agent_trainer data.train_files=...   # the GPU trainer (verl + SGLang)

`--model PATH` is `actor_rollout_ref.model.path=PATH` on the GPU config, `--resume` is `trainer.resume_mode=auto`
and its absence `trainer.resume_mode=disable` (verl's own default is `auto`), so on both a run continues from its
latest checkpoint only when asked to. (Without `--resume` the CPU engine refuses a run folder that exists; verl
starts again from step 0 in it.) A `trainer.resume_mode=...` override of your own is left as it is.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional, Sequence

from rstar2_agent.engine.config import CPU_CONFIGS


def add_command(sub) -> None:
    p = sub.add_parser("train", help="train with GRPO-RoC (default: the CPU engine on a small model)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--config-name", default="cpu_trainer",
                   help=f"a CPU config ({', '.join(CPU_CONFIGS)}) or a GPU one (rstar2_agent_trainer)")
    p.add_argument("--model", default=None, help="a local Hugging Face model folder (actor_rollout_ref.model.path)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    p.set_defaults(func=run)


def gpu_argv(config_name: str, model: Optional[str], resume: bool, overrides: Sequence[str]) -> list[str]:
    """The command line of `python3 -m rstar2_agent.main` for the same request. Without `--resume` it disables
    verl's default resume (`auto`), unless the overrides set `trainer.resume_mode` themselves.

    >>> gpu_argv("rstar2_agent_trainer", "/m", True, ["data.train_batch_size=64"])
    ['--config-name', 'rstar2_agent_trainer', 'data.train_batch_size=64', 'actor_rollout_ref.model.path=/m', 'trainer.resume_mode=auto']
    >>> gpu_argv("rstar2_agent_trainer", None, False, [])
    ['--config-name', 'rstar2_agent_trainer', 'trainer.resume_mode=disable']
    >>> gpu_argv("rstar2_agent_trainer", None, False, ["trainer.resume_mode=resume_path"])[-1]   # yours is kept
    'trainer.resume_mode=resume_path'
    """
    argv = ["--config-name", config_name, *overrides]
    if model:
        argv.append(f"actor_rollout_ref.model.path={model}")
    if not any(o.split("=", 1)[0].lstrip("+~") == "trainer.resume_mode" for o in overrides):
        argv.append(f"trainer.resume_mode={'auto' if resume else 'disable'}")
    return argv


def run(args) -> None:
    overrides = list(args.overrides)
    if args.config_name not in CPU_CONFIGS:
        from rstar2_agent import main as gpu_main

        sys.argv = ["rstar2_agent.main", *gpu_argv(args.config_name, args.model, args.resume, overrides)]
        gpu_main.main()
        return
    if args.model:
        overrides.append(f"actor_rollout_ref.model.path={args.model}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the reward pool forks after tokenizers ran
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from rstar2_agent.engine.config import compose
    from rstar2_agent.engine.trainer import CPUTrainer

    try:
        cfg = compose(args.config_name, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        sys.exit(f"error: bad config override: {exc}")
    # SIGTERM unwinds like Ctrl-C: the private code judge is stopped and the last checkpoint stays intact
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    CPUTrainer(cfg, resume=args.resume).fit()
