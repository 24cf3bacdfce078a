"""Multi-turn tool-use rollouts: the engine-agnostic loop (`core`), the chat template (`template`) and the verl
agent loop `rstar2_agent` (`verl_agent_loop`, imported only where verl is wanted)."""

from rstar2_agent.rollout.core import (AgentLoop, ContextFull, Generation, LoopConfig, Trajectory, TrajectoryStats,
                                       truncate)
from rstar2_agent.rollout.template import ToolTurnFormat, load_chat_template, prompt_ids, render

__all__ = ["AgentLoop", "ContextFull", "Generation", "LoopConfig", "Trajectory", "TrajectoryStats",
           "ToolTurnFormat", "load_chat_template", "prompt_ids", "render", "truncate"]
