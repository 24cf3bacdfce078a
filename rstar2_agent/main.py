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
    check_eos(config.actor_rollout_ref.model)


def check_eos(model) -> None:
    """Refuse a tokenizer whose EOS does not end the chat template's assistant turn, before any GPU is taken.

    The agent loop (rstar2_agent.rollout.template.ToolTurnFormat) cuts tool turns out of the template at the EOS,
    and the rollout server ends a turn at it; with the wrong EOS (base Qwen checkpoints ship `<|endoftext|>`,
    the ChatML template ends turns with `<|im_end|>`) every trajectory would fail. The check is the agent loop's
    own, run once on the tokenizer of `model.tokenizer_path` or `model.path`, from local files only.
    """
    from transformers import AutoTokenizer

    from rstar2_agent.rollout.template import ToolTurnFormat

    path = os.path.expanduser(model.get("tokenizer_path") or model.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                  trust_remote_code=bool(model.get("trust_remote_code")))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot load the tokenizer of actor_rollout_ref.model.path={path!r} from local files "
                         f"(download the model first): {exc}") from exc
    template = model.get("custom_chat_template") or tokenizer.chat_template
    try:
        ToolTurnFormat(tokenizer, template).text(["tool output"])
    except (ValueError, TypeError) as exc:  # TypeError: no eos_token at all
        raise SystemExit(
            f"the tokenizer at {path!r} has eos_token={tokenizer.eos_token!r}, but {exc}. Use a checkpoint whose "
            "tokenizer ends assistant turns with the template's EOS (an instruction-tuned Qwen: '<|im_end|>'), or "
            "set its eos_token to that token (tokenizer_config.json) after checking the model was trained to "
            "emit it."
        ) from exc


@hydra.main(config_path="config", config_name="rstar2_agent_trainer", version_base=None)
def main(config) -> None:
    from verl.trainer.main_ppo import main as verl_main

    check_supported(config)
    verl_main.__wrapped__(config)  # verl's body without its own @hydra.main


if __name__ == "__main__":
    main()
