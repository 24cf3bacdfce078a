"""The policy prompt: the question in upstream's SFT format, then the partial solution appended directly.

Upstream's SFT policy prompt (``sft_prompt.json``) is::

    <|user|>:
    {input}
    <|assistant|>: Let's think step by step and solve the problem with code.

``prompt_path`` may name a JSON file with a ``prompt_input`` template holding ``{input}`` to use another one;
``few_shot_path`` (a JSON list of solved examples, as strings) with ``num_few_shot`` > 0 puts that many
examples, blank-line separated, before the question (ours: upstream's bootstrap prompt files are not bundled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from rstar2_agent.math.tree import Node

__all__ = ["SFT_PROMPT", "load_template", "question_prompt", "partial_solution"]

SFT_PROMPT = "<|user|>:\n{input}\n<|assistant|>: Let's think step by step and solve the problem with code."


def load_template(prompt_path: Optional[str]) -> str:
    """The ``prompt_input`` template of a prompt file, or :data:`SFT_PROMPT` without one."""
    if not prompt_path:
        return SFT_PROMPT
    data = json.loads(Path(prompt_path).read_text())
    template = data["prompt_input"] if isinstance(data, dict) else None
    if not isinstance(template, str) or "{input}" not in template:
        raise ValueError(f"{prompt_path}: needs a 'prompt_input' string holding '{{input}}'")
    return template


def question_prompt(question: str, template: str = SFT_PROMPT, few_shots: tuple[str, ...] = ()) -> str:
    """The prompt of one question (few-shot examples first, when given).

    >>> question_prompt("1+1?")
    "<|user|>:\\n1+1?\\n<|assistant|>: Let's think step by step and solve the problem with code."
    """
    prompt = template.replace("{input}", question)
    return "\n\n".join([*few_shots, prompt]) if few_shots else prompt


def partial_solution(node: Node, step_delim: str = "\n") -> str:
    """The texts of the steps from the root down to ``node``, each followed by ``step_delim``.

    The root holds no step, so the root's partial solution is empty.
    """
    return "".join(n.state["text"] + step_delim for n in node.path()[1:])
