"""The bundled bootstrap prompt and few-shot examples (sample_mcts.yaml): found by relative path, placed in
the template, and themselves well-formed solutions whose code prints what their <output> says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rstar2_agent.math import steps
from rstar2_agent.math.config import CONFIG_DIR, SearchConfigError, load_config
from rstar2_agent.math.prompts import load_few_shots
from rstar2_agent.math.search import make_trees


def test_sample_mcts_puts_instructions_then_both_examples_then_the_question():
    cfg = load_config("sample_mcts")
    assert cfg.prompt_path == str(CONFIG_DIR / "prompts" / "mcts_prompt.json")
    tree, = make_trees([{"question": "What is {x} in 2 + 2?", "answer": "4"}], cfg)
    shots = json.loads((CONFIG_DIR / "prompts" / "mcts_few_shot.json").read_text())
    assert len(shots) == cfg.num_few_shot == 2
    positions = [tree.prompt.index(shot) for shot in shots]
    assert 0 < positions[0] < positions[1]
    assert tree.prompt.rstrip().endswith("Now! It's your turn.\nQuestion: What is {x} in 2 + 2?")
    assert "{examples}" not in tree.prompt and "{input}" not in tree.prompt


@pytest.mark.parametrize("index", [0, 1])
def test_each_bundled_example_follows_the_step_format_and_its_code_prints_its_output(index):
    shot = json.loads((CONFIG_DIR / "prompts" / "mcts_few_shot.json").read_text())[index]
    solution = shot.split("\n", 1)[1]  # after the "Question: ..." line
    assert solution.startswith(steps.CODE_START + "\n") and solution.endswith(steps.ANSWER_END)
    code = steps.extract_code(solution)
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             check=True).stdout.strip()
    output = solution.split(steps.OUTPUT_START, 1)[1].split(steps.OUTPUT_END, 1)[0]
    assert printed == output
    assert steps.extract_answer(solution) == output
    assert solution.count(steps.STEP_END) >= 2


def test_a_missing_prompt_file_or_too_few_examples_is_an_error_naming_it(tmp_path):
    with pytest.raises(SearchConfigError, match="few_shot_path"):
        load_config("sample_mcts", ["few_shot_path=prompts/nope.json"])
    one = tmp_path / "one.json"
    one.write_text(json.dumps(["Q: 1+1? A: 2"]))
    with pytest.raises(ValueError, match="holds 1 example"):
        load_few_shots(str(one), 2)
    assert load_few_shots(str(one), 0) == ()
