"""PPM training on a tiny model built in the test: the pairwise loss falls, pair accuracy rises, and the saved
folder (model + value_head.bin) loads with the search's PPM loader and scores."""

from __future__ import annotations

import doctest
import json

import pytest
import torch

from rstar2_agent.cli import main as cli_main
from rstar2_agent.math import ppm_train
from rstar2_agent.math.ppm import VALUE_HEAD_FILE, PPMScorer
from rstar2_agent.math.ppm_train import PairCollator, evaluate_pairs, pair_weight, pairwise_loss
from rstar2_agent.math.prompts import question_prompt
from rstar2_agent.verl_cpu.models import save_tiny


def pairs(numbers: range) -> list[dict]:
    """Separable pairs: the right step adds, the wrong one subtracts (and says so at its end)."""
    rows = []
    for i in numbers:
        a, b = i % 7 + 1, i % 5 + 2
        rows.append({"prompt": question_prompt(f"What is {a} + {b}?"),
                     "pos": f"<code>\nprint({a} + {b})\n<end_of_code>\n# sum\n",
                     "neg": f"<code>\nprint({a} - {b})\n<end_of_code>\n# difference\n",
                     "pos_count": 1 + i % 2, "neg_count": 2})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_doctests():
    result = doctest.testmod(ppm_train)
    assert result.attempted > 0 and result.failed == 0


def test_loss_is_weighted_sum_of_logsigmoid_margins():
    r_pos, r_neg = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5])
    weights = torch.tensor([pair_weight(1, 2), pair_weight(2, 2)])  # 1/2, 1/4
    expected = 0.5 * -torch.nn.functional.logsigmoid(torch.tensor(1.0)) \
        + 0.25 * -torch.nn.functional.logsigmoid(torch.tensor(-1.0))
    assert float(pairwise_loss(r_pos, r_neg, weights)) == pytest.approx(float(expected))


def test_collator_puts_positives_first_and_pads_right():
    batch = PairCollator(pad_id=0)([{"pos_ids": [5, 6, 7], "neg_ids": [8], "weight": 0.5},
                                    {"pos_ids": [9], "neg_ids": [3, 4], "weight": 1.0}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, 0, 0], [8, 0, 0], [3, 4, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert batch["weights"].tolist() == [0.5, 1.0]


def test_training_raises_pair_accuracy_and_saves_the_upstream_layout(tmp_path, capsys):
    policy = save_tiny(str(tmp_path / "policy"), seed=0)
    train = write_jsonl(tmp_path / "train.jsonl", pairs(range(0, 24)))
    held_out = pairs(range(100, 116))
    evalf = write_jsonl(tmp_path / "eval.jsonl", held_out)
    model, tok = ppm_train.load_ppm_init(policy)
    before = evaluate_pairs(PPMScorer(model.eval(), tok), held_out)
    out = tmp_path / "ppm"
    cli_main(["math", "ppm", "--model_name_or_path", policy, "--train_file", str(train), "--eval_file", str(evalf),
              "--output_dir", str(out), "--learning_rate", "3e-3", "--num_train_epochs", "6",
              "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--save_strategy", "no",
              "--eval_steps", "1000", "--logging_steps", "5", "--seed", "0"])
    printed = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert printed["steps"] == 18 and printed["eval_accuracy"] >= 0.9
    # the saved folder: a model folder plus value_head.bin, loaded by the search's loader
    assert (out / "config.json").is_file() and (out / VALUE_HEAD_FILE).is_file()
    head = torch.load(out / VALUE_HEAD_FILE, weights_only=True)
    assert sorted(head) == ["v_head.summary.bias", "v_head.summary.weight"]
    scorer = PPMScorer.from_pretrained(out)
    after = evaluate_pairs(scorer, held_out)
    assert after["accuracy"] == pytest.approx(printed["eval_accuracy"])
    assert after["accuracy"] >= 0.9 > before["accuracy"]
    assert after["loss"] < before["loss"]
    values = scorer.score([r["prompt"] + r["pos"] for r in held_out[:2]])
    assert all(-1 < v < 1 for v in values)
    assert "<end_of_step>" in scorer.tokenizer.get_vocab()  # upstream's step tokens were added


def test_bad_pair_file_is_refused_with_file_and_line(tmp_path):
    policy = save_tiny(str(tmp_path / "policy"), seed=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(pairs(range(1))[0]) + "\n" + json.dumps({"prompt": "p", "pos": "a"}) + "\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: missing 'neg', 'pos_count', 'neg_count'"):
        cli_main(["math", "ppm", "--model_name_or_path", policy, "--train_file", str(bad),
                  "--output_dir", str(tmp_path / "o")])
