"""Everything rstar2-agent registers with verl, imported in every verl process.

`rstar2_agent.main` sets `VERL_USE_EXTERNAL_MODULES=rstar2_agent.verl_plugins` before Ray starts; verl's own
`__init__` imports the listed modules in each process (driver, TaskRunner, agent-loop and reward workers), so
the registrations below exist wherever verl looks them up:

- agent loop `rstar2_agent`            (rollout.verl_agent_loop)
- tool parser `rstar2_agent_hermes`     (tools.verl_parser)
- reward manager `code_judge`           (reward.verl_manager)
- V1 trainer `rstar2_agent`             (trainer.roc_trainer: GRPO-RoC down-sampling)
- OmegaConf resolvers `${rstar2_config:relative/path}` (absolute path of a file shipped in rstar2_agent/config)
  and `${rstar2_chat_template:}` (the shipped chat template's text), used by rstar2_agent_recipe.yaml.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


def config_file(relative: str) -> str:
    path = os.path.join(CONFIG_DIR, relative)
    if not os.path.exists(path):
        raise FileNotFoundError(f"rstar2_agent/config has no {relative!r}")
    return path


def chat_template() -> str:
    from rstar2_agent.rollout.template import load_chat_template

    return load_chat_template()


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("rstar2_config", config_file, replace=True)
    OmegaConf.register_new_resolver("rstar2_chat_template", chat_template, replace=True)


register_resolvers()

import rstar2_agent.verl_cpu.register  # noqa: E402,F401 - registers platform "cpu" (if VERL_PLATFORM=cpu), rollout "hf_cpu"
import rstar2_agent.reward.verl_manager  # noqa: E402,F401 - registers "code_judge"
import rstar2_agent.rollout.verl_agent_loop  # noqa: E402,F401 - registers "rstar2_agent"
import rstar2_agent.tools.verl_parser  # noqa: E402,F401 - registers "rstar2_agent_hermes"
import rstar2_agent.trainer.roc_trainer  # noqa: E402,F401 - registers trainer_mode "rstar2_agent"
