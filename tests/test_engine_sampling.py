"""Per-request sampling in the CPU engine's transformers generator: a request's draws depend on the seed, its id
and its input, not on which other requests share its batch (that depends on the code judge's timing)."""

from __future__ import annotations

import asyncio

import torch

from rstar2_agent.engine import backend
from rstar2_agent.engine.config import compose
from rstar2_agent.engine.generator import BatchingGenerator, request_seed, sample_next
from rstar2_agent.engine.tiny import build_model, build_tokenizer

TOK = build_tokenizer()
PARAMS = {"temperature": 1.0, "max_tokens": 24, "ignore_eos": True}
PROMPTS = [TOK.encode(f"<|im_start|>user\nWhat is {i} * {i + 3}?<|im_end|>\n") for i in range(5)]


def _generator(seed: int = 1) -> BatchingGenerator:
    return BatchingGenerator(build_model(TOK, seed=3), TOK, max_num_seqs=8, stop_strings=(), seed=seed)


def test_a_request_samples_the_same_tokens_alone_and_inside_a_batch():
    gen = _generator()
    torch.manual_seed(0)
    alone = gen.generate_batch(PROMPTS[2:3], PARAMS, [24], request_ids=["s1-2-0"])[0]
    torch.manual_seed(123)  # the global stream plays no part
    batched = gen.generate_batch(PROMPTS, PARAMS, [24, 5, 24, 9, 24], request_ids=[f"s1-{i}-0" for i in range(5)])
    assert len(alone) == 24 and batched[2] == alone
    # and the rows do not all draw the same tokens: a different id is a different stream
    assert len({tuple(row[:5]) for row in batched}) == 5


def test_one_shared_stream_would_make_the_draws_depend_on_the_batch():
    """What the per-request generators fix: with torch's global stream the same row draws other tokens."""
    gen = _generator()
    torch.manual_seed(0)
    alone = gen.generate_batch(PROMPTS[2:3], PARAMS, [24])[0]
    torch.manual_seed(0)
    batched = gen.generate_batch(PROMPTS, PARAMS, [24] * 5)
    assert batched[2] != alone


def test_concurrent_calls_pass_their_request_ids_and_repeat_across_runs():
    async def run(gen, ids):
        return await asyncio.gather(*(gen(rid, PROMPTS[int(rid.split("-")[1])], PARAMS) for rid in ids))

    gen = _generator()
    together = asyncio.run(run(gen, [f"val-{i}-0" for i in range(5)]))
    alone = asyncio.run(run(gen, ["val-3-0"]))
    assert together[3].token_ids == alone[0].token_ids  # what validation relies on
    other_seed = asyncio.run(run(_generator(seed=2), ["val-3-0"]))
    assert other_seed[0].token_ids != alone[0].token_ids  # trainer.seed matters


def test_the_seed_is_the_same_in_every_process_and_covers_the_turn():
    import os
    import subprocess
    import sys

    code = "from rstar2_agent.engine.generator import request_seed; print(request_seed(1, 's3-0-1', 40))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert int(other) == request_seed(1, "s3-0-1", 40)  # not Python's salted str hash
    assert len({request_seed(1, "a", 40), request_seed(1, "a", 41), request_seed(2, "a", 40),
                request_seed(1, "b", 40)}) == 4
    assert 0 <= request_seed(7, "x", 1) < 2**63


def test_sample_next_with_generators_draws_each_row_from_its_own():
    logits = torch.zeros(3, 50)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    rows = sample_next(logits, 1.0, generators=gens)
    again = sample_next(logits[1:2], 1.0, generators=[torch.Generator().manual_seed(2)])
    assert rows.shape == (3,) and rows[1] == again[0]
    assert sample_next(torch.tensor([[0.0, 3.0, 1.0]]), 0.0, generators=gens[:1]).tolist() == [1]  # greedy


def test_the_engine_seeds_its_generator_with_trainer_seed():
    cfg = compose("cpu_trainer_tiny", ["trainer.seed=7", "actor_rollout_ref.rollout.name=hf"])
    gen = backend.build_generator(cfg, build_model(TOK), TOK, None, echo=lambda line: None)
    assert isinstance(gen, BatchingGenerator) and gen.seed == 7
