"""Hydra entry point of GPU training: `python3 -m rstar2_agent.main [overrides]`.

It composes `rstar2_agent/config/rstar2_agent_trainer.yaml` (verl's `ppo_trainer` plus the recipe) and hands
the config to verl's own `main_ppo` body, unchanged: no copy of verl's task runner or training loop. Before
Ray starts it sets `VERL_USE_EXTERNAL_MODULES=rstar2_agent.verl_plugins`, so that our agent loop, tool parser,
reward manager and config resolvers are registered in every verl process.
"""

from __future__ import annotations

import os

import hydra

PLUGINS = "rstar2_agent.verl_plugins"


def enable_plugins() -> None:
    """Add our plugin module to VERL_USE_EXTERNAL_MODULES (kept for child processes) and import it here."""
    modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    if PLUGINS not in modules:
        os.environ["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules + [PLUGINS])
    import rstar2_agent.verl_plugins  # noqa: F401


enable_plugins()


def check_supported(config) -> None:
    """Refuse settings this version cannot honour, instead of ignoring them."""
    hooked = config.trainer.use_v1 and config.trainer.v1.trainer_mode == "rstar2_agent"
    if config.augmentation.do_down_sampling and not hooked:
        raise SystemExit(
            "augmentation.do_down_sampling=True needs verl's V1 trainer with our hook: set trainer.use_v1=True and "
            f"trainer.v1.trainer_mode=rstar2_agent (got use_v1={config.trainer.use_v1}, "
            f"trainer_mode={config.trainer.v1.trainer_mode})."
        )


@hydra.main(config_path="config", config_name="rstar2_agent_trainer", version_base=None)
def main(config) -> None:
    from verl.trainer.main_ppo import main as verl_main

    check_supported(config)
    verl_main.__wrapped__(config)  # verl's body without its own @hydra.main


if __name__ == "__main__":
    main()
