"""The in-process transformers backend on the tiny model built in the test."""

from __future__ import annotations

from rstar2_agent.engine.tiny import build_model, build_tokenizer
from rstar2_agent.math.backends import TransformersGenerator, continuation_from_ids


def test_continuation_from_ids_moves_the_stop_and_drops_eos():
    tok = build_tokenizer()
    ids = tok("x = 1\n<end_of_step>", add_special_tokens=False)["input_ids"]
    cont = continuation_from_ids(tok, ids, ["<end_of_step>", "<end_of_code>"], {tok.eos_token_id})
    assert (cont.text, cont.stop_reason, cont.num_tokens) == ("x = 1\n", "<end_of_step>", len(ids))
    eos = continuation_from_ids(tok, ids[:3] + [tok.eos_token_id], ["<end_of_step>"], {tok.eos_token_id})
    assert eos.stop_reason is None and eos.num_tokens == 4 and eos.text == tok.decode(ids[:3])


def test_generate_n_samples_per_prompt_seeded_and_bounded():
    tok = build_tokenizer()
    gen = TransformersGenerator(build_model(tok, seed=1), tok, max_num_seqs=4, seed=5)
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_tokens": 6, "stop": ["<end_of_step>"], "seed": 5}
    prompts = ["<|user|>:\nWhat is 2+2?", "<|user|>:\nWhat is 3+3?"]
    out = gen.generate(prompts, 3, params)
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    assert all(1 <= c.num_tokens <= 6 for cs in out for c in cs)
    assert len({c.text for c in out[0]}) > 1  # the n samples of a prompt differ (own seeds)
    again = TransformersGenerator(build_model(tok, seed=1), tok, max_num_seqs=2, seed=5).generate(prompts, 3, params)
    assert again == out  # same seed, other chunking: same samples
    greedy = gen.generate(prompts[:1], 2, {**params, "temperature": 0.0})
    assert greedy[0][0] == greedy[0][1]
