"""Policy SFT on a tiny model built in the test: the prompt is masked, a few steps lower the loss on the example,
and the saved folder loads with the search's generation backend."""

from __future__ import annotations

import json

import pytest
import torch

from rstar2_agent.cli import main as cli_main
from rstar2_agent.math.backends import TransformersGenerator
from rstar2_agent.math.prompts import question_prompt
from rstar2_agent.math.sft import SFT_TOKENS, SFTCollator, encode_example, encode_rows, load_policy
from rstar2_agent.verl_cpu.models import save_tiny

QUERY = "What is 6 * 7?"
RESPONSE = "<code>\nprint(6 * 7)\n<end_of_code>\n<output>42<end_of_output>\n<answer>\\boxed{42}\n<end_of_answer>"


@pytest.fixture()
def policy(tmp_path):
    return save_tiny(str(tmp_path / "policy"), seed=1)


def loss_on(model, tokenizer, query: str, response: str) -> float:
    batch = SFTCollator(tokenizer.pad_token_id)([encode_example(tokenizer, query, response)])
    with torch.no_grad():
        return float(model(**batch).loss)


def test_prompt_tokens_are_masked_and_response_tokens_learned(policy):
    _, tok = load_policy(policy)
    ex = encode_example(tok, QUERY, RESPONSE)
    prompt_ids = tok(question_prompt(QUERY), add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids
    assert ex["labels"][:n] == [-100] * n
    assert ex["labels"][n:] == ex["input_ids"][n:] and ex["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(ex["input_ids"][n:-1]) == RESPONSE
    # the upstream step tokens are single tokens now
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in SFT_TOKENS)
    # padding in a batch is masked too; a prompt filling max_length leaves nothing to learn and is left out
    batch = SFTCollator(tok.pad_token_id)([ex, encode_example(tok, "1+1?", "2")])
    assert batch["labels"].shape == batch["input_ids"].shape
    short = len(tok(question_prompt("1+1?"), add_special_tokens=False)["input_ids"]) + 2
    assert (batch["labels"][1, short:] == -100).all() and (batch["attention_mask"][1, short:] == 0).all()
    assert encode_rows([{"query": QUERY, "response": RESPONSE}], tok, max_length=n) == []


def test_a_few_sft_steps_lower_the_loss_and_the_model_loads_in_the_search_backend(policy, tmp_path, capsys):
    data = tmp_path / "sft.json"
    data.write_text(json.dumps([{"query": QUERY, "response": RESPONSE}]))  # upstream's JSON-list format
    model, tok = load_policy(policy)
    before = loss_on(model, tok, QUERY, RESPONSE)
    out = tmp_path / "sft"
    cli_main(["math", "sft", "--model_name_or_path", policy, "--train_file", str(data), "--output_dir", str(out),
              "--learning_rate", "1e-2", "--max_steps", "40", "--per_device_train_batch_size", "1",
              "--gradient_accumulation_steps", "1", "--weight_decay", "0.0", "--save_strategy", "no", "--seed", "0"])
    metrics = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert metrics["steps"] == 40 and metrics["examples"] == 1
    trained, tok2 = load_policy(out)
    after = loss_on(trained, tok2, QUERY, RESPONSE)
    assert after < before / 4, (before, after)
    # the search's in-process backend loads the folder and, greedy, continues the prompt as it was taught
    gen = TransformersGenerator.from_pretrained(str(out))
    [[cont]] = gen.generate([question_prompt(QUERY)], 1, {"temperature": 0.0, "max_tokens": 16,
                                                            "stop": ["<end_of_code>"]})
    assert cont.text.startswith("<code>\nprint(6 * 7)")


def test_missing_key_is_refused_with_file_and_line(policy, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "response": "r"}\n{"question": "q"}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: missing 'query', 'response'"):
        cli_main(["math", "sft", "--model_name_or_path", policy, "--train_file", str(bad),
                  "--output_dir", str(tmp_path / "o")])
