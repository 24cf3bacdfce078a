"""Generation backends behind the search's one small interface::

    generate(prompts: list[str], n: int, params: dict) -> list[list[Continuation]]

``params`` uses vLLM's names: ``temperature`` (0 = greedy), ``top_p``, ``top_k``, ``max_tokens``, ``stop``
(strings; a continuation that ends on one has it removed from ``text`` and named in ``stop_reason``, as vLLM
reports it) and ``seed``.

Here: :class:`TransformersGenerator`, in-process transformers for models vLLM cannot load (the tiny test
models). It reuses the CPU engine's decode loop (:meth:`rstar2_agent.engine.generator.BatchingGenerator.decode`:
one shared KV cache, finished rows leave the batch, stop strings checked on the decoded tail, a seeded sampler
per row) rather than a second decode loop. The n samples of a prompt are n rows with their own seeds.
The OpenAI-compatible server backend (``vllm serve``, SGLang) is :mod:`.openai_backend`; vLLM's offline
``LLM`` in this process is :mod:`.vllm_backend`, which also decides which one ``--backend auto`` takes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional, Sequence

from rstar2_agent.engine.generator import BatchingGenerator
from rstar2_agent.math.steps import Continuation

__all__ = ["continuation_from_ids", "TransformersGenerator"]


def continuation_from_ids(tokenizer, ids: Sequence[int], stops: Sequence[str], eos_ids: set[int]) -> Continuation:
    """A decoded row as a :class:`Continuation`: EOS dropped, a final stop string moved to ``stop_reason``."""
    ids = list(ids)
    count = len(ids)
    if ids and ids[-1] in eos_ids:
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=False)
    for stop in sorted(stops, key=len, reverse=True):
        if stop and text.endswith(stop):
            return Continuation(text[: -len(stop)], stop, count)
    return Continuation(text, None, count)


class TransformersGenerator:
    """``generate`` on a transformers causal LM in this process (see the module docstring)."""

    def __init__(self, model, tokenizer, max_num_seqs: int = 32, seed: int = 0,
                 eos_token_ids: Optional[Sequence[int]] = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_num_seqs = max(1, max_num_seqs)
        self.seed = seed
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids else [tokenizer.eos_token_id]
        self._engines: dict[tuple[str, ...], BatchingGenerator] = {}
        self.calls = 0
        self.generated_tokens = 0

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> "TransformersGenerator":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return cls(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), **kwargs)

    def _engine(self, stops: Sequence[str]) -> BatchingGenerator:
        """The decode loop with these stop strings (they are fixed per instance there)."""
        key = tuple(stops)
        if key not in self._engines:
            self._engines[key] = BatchingGenerator(self.model, self.tokenizer, max_num_seqs=self.max_num_seqs,
                                                   stop_strings=key, eos_token_ids=self.eos_token_ids,
                                                   seed=self.seed)
        return self._engines[key]

    def generate(self, prompts: list[str], n: int, params: dict[str, Any]) -> list[list[Continuation]]:
        self.calls += 1
        stops = [s for s in (params.get("stop") or []) if s]
        engine = self._engine(stops)
        if params.get("seed") is not None:
            engine.seed = int(params["seed"])
        decode_params = {"temperature": float(params.get("temperature", 1.0)),
                         "top_p": float(params.get("top_p", 1.0)), "top_k": max(int(params.get("top_k", 0) or 0), 0)}
        max_tokens = int(params.get("max_tokens", 256))
        rows = []  # (prompt index, ids, request id)
        for i, prompt in enumerate(prompts):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            digest = hashlib.sha256(prompt.encode()).hexdigest()[:16]
            rows.extend((i, ids, f"{digest}:{j}") for j in range(n))
        out: list[list[Continuation]] = [[] for _ in prompts]
        for start in range(0, len(rows), self.max_num_seqs):
            chunk = rows[start:start + self.max_num_seqs]
            decoded, _ = engine.decode([r[1] for r in chunk], decode_params, [max_tokens] * len(chunk),
                                       request_ids=[r[2] for r in chunk])
            for (i, _, _), ids in zip(chunk, decoded):
                self.generated_tokens += len(ids)
                out[i].append(continuation_from_ids(self.tokenizer, ids, stops, engine.eos_ids))
        return out
