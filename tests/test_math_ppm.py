"""PPM: a tiny causal LM + value head built in the test; upstream save layout, scores, padding invariance."""

from __future__ import annotations

import math

import pytest
import torch

from rstar2_agent.engine.tiny import build_model, build_tokenizer
from rstar2_agent.math.ppm import VALUE_HEAD_FILE, PPMScorer, ProcessPreferenceModel

TEXTS = ["<code>\nx = 1\n<end_of_step>", "short", "The answer is \\boxed{42}. " * 5]


@pytest.fixture()
def ppm():
    tok = build_tokenizer()
    model = ProcessPreferenceModel(build_model(tok, seed=3))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.v_head.summary.weight, std=2.0)  # visible scores, not ~1e-6
    return model.eval(), tok


def test_save_load_upstream_layout_same_scores(ppm, tmp_path):
    model, tok = ppm
    before = PPMScorer(model, tok).score(TEXTS)
    model.save_pretrained(tmp_path, tokenizer=tok)
    state = torch.load(tmp_path / VALUE_HEAD_FILE, weights_only=True)
    assert sorted(state) == ["v_head.summary.bias", "v_head.summary.weight"]
    assert (tmp_path / "config.json").is_file()
    after = PPMScorer.from_pretrained(tmp_path).score(TEXTS)
    assert after == pytest.approx(before, abs=1e-5)
    assert len(set(round(v, 4) for v in before)) == len(TEXTS)  # the texts really score differently


def test_scores_are_tanh_of_raw_over_5(ppm):
    model, tok = ppm
    scorer = PPMScorer(model, tok)
    raw = scorer.raw_scores(TEXTS)
    assert scorer.score(TEXTS) == pytest.approx([math.tanh(r / 5) for r in raw])
    assert all(-1 < v < 1 for v in scorer.score(TEXTS))


def test_padding_and_batching_do_not_change_a_score(ppm):
    model, tok = ppm
    alone = [PPMScorer(model, tok, batch_size=1).raw_scores([t])[0] for t in TEXTS]
    together = PPMScorer(model, tok, batch_size=8).raw_scores(TEXTS)
    assert together == pytest.approx(alone, abs=1e-4)
    # the score is read at the last real token: the head applied to that hidden state by hand
    ids = torch.tensor([tok("short", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        hidden = model.base(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        by_hand = float(model.v_head(hidden))
    assert alone[1] == pytest.approx(by_hand, abs=1e-4)


def test_plain_model_folder_is_refused(tmp_path):
    tok = build_tokenizer()
    build_model(tok).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="value_head.bin"):
        ProcessPreferenceModel.from_pretrained(tmp_path)
