"""The policy prompt: the question in upstream's SFT format, then the partial solution appended directly.

Upstream's SFT policy prompt (``sft_prompt.json``) is::

    <|user|>:
    {input}
    <|assistant|>: Let's think step by step and solve the problem with code.

``prompt_path`` may name a JSON file with a ``prompt_input`` template holding ``{input}`` to use another one;
``few_shot_path`` (a JSON list of solved examples, as strings) with ``num_few_shot`` > 0 puts that many
examples, blank-line separated, where the template says ``{examples}``, or before it when it does not.

Bundled for the round-1 bootstrap (``sample_mcts.yaml`` names them; our wording, upstream's shape: agent
instructions, then the examples, then ``Now! It's your turn.``): ``prompts/mcts_prompt.json`` and
``prompts/mcts_few_shot.json`` under ``rstar2_agent/config/math/``, two solved problems in the step format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from rstar2_agent.math.tree import Node

__all__ = ["SFT_PROMPT", "load_template", "load_few_shots", "question_prompt", "partial_solution"]

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


def load_few_shots(few_shot_path: Optional[str], num_few_shot: int) -> tuple[str, ...]:
    """The first ``num_few_shot`` examples of a JSON list of strings; none without a path or with 0."""
    if not few_shot_path or num_few_shot <= 0:
        return ()
    shots = json.loads(Path(few_shot_path).read_text())
    if not isinstance(shots, list) or not all(isinstance(shot, str) for shot in shots):
        raise ValueError(f"{few_shot_path}: needs a JSON list of example strings")
    if len(shots) < num_few_shot:
        raise ValueError(f"{few_shot_path}: num_few_shot={num_few_shot} but the file holds {len(shots)} example(s)")
    return tuple(shots[:num_few_shot])


def question_prompt(question: str, template: str = SFT_PROMPT, few_shots: tuple[str, ...] = ()) -> str:
    """The prompt of one question: ``{input}`` is the question, ``{examples}`` the few-shot examples (put
    before the whole prompt when the template has no ``{examples}``). One pass, so braces in a question or an
    example are never read as placeholders.

    >>> question_prompt("1+1?")
    "<|user|>:\\n1+1?\\n<|assistant|>: Let's think step by step and solve the problem with code."
    >>> question_prompt("Is {examples} literal?", "Shots:\\n{examples}\\nQ: {input}", ("Q: 2+2? A: 4",))
    'Shots:\\nQ: 2+2? A: 4\\nQ: Is {examples} literal?'
    """
    examples = "\n\n".join(few_shots)
    prompt = re.sub(r"\{(input|examples)\}", lambda m: question if m.group(1) == "input" else examples, template)
    if few_shots and "{examples}" not in template:
        return examples + "\n\n" + prompt
    return prompt


def partial_solution(node: Node, step_delim: str = "\n") -> str:
    """The texts of the steps from the root down to ``node``, each followed by ``step_delim``.

    The root holds no step, so the root's partial solution is empty.
    """
    return "".join(n.state["text"] + step_delim for n in node.path()[1:])
