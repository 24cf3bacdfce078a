"""The search's offline vLLM backend (rstar2_agent/math/vllm_backend.py): which backend `--backend auto`
takes, how a vLLM completion becomes a Continuation, and, where `import vllm` works, the same greedy steps as
the transformers backend on the default model (SmolLM2-135M), stop strings named, and best_of keeping n."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rstar2_agent import vllm_cpu
from rstar2_agent.math import vllm_backend
from rstar2_agent.math.steps import Continuation


def test_auto_takes_transformers_without_vllm_and_forcing_vllm_stops_with_the_reason(monkeypatch):
    monkeypatch.setattr(vllm_cpu, "available", lambda: False)
    assert vllm_backend.choose_backend("auto", "/any/model") == ("transformers", "`import vllm` fails in this Python")
    with pytest.raises(SystemExit, match="import vllm"):
        vllm_backend.choose_backend("vllm", "/any/model")
    assert vllm_backend.choose_backend("openai", "/any/model")[0] == "openai"
    with pytest.raises(SystemExit, match="choose one of"):
        vllm_backend.choose_backend("sglang", "/any/model")


def test_auto_takes_vllm_where_it_loads_the_model(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_unavailable_reason", lambda model_dir: None)
    assert vllm_backend.choose_backend("auto", "/any/model")[0] == "vllm"


def test_a_vllm_completion_becomes_a_continuation_with_its_stop_string_named():
    stopped = SimpleNamespace(text="x = 1\n", stop_reason="<end_of_step>", token_ids=[5, 6, 7])
    eos = SimpleNamespace(text="done", stop_reason=None, token_ids=[1, 2])
    stop_token = SimpleNamespace(text="done", stop_reason=2, token_ids=[1, 2])
    assert vllm_backend.continuation_of(stopped) == Continuation("x = 1\n", "<end_of_step>", 3)
    assert vllm_backend.continuation_of(eos) == vllm_backend.continuation_of(stop_token) == Continuation("done", None, 2)


def test_the_search_dtype_reaches_vllm_on_cpu(monkeypatch):
    """`dtype` (config key, default auto) goes through `cpu_dtype` into vLLM's `LLM(dtype=...)` on CPU."""
    built = {}
    monkeypatch.setattr(vllm_backend, "_on_gpu", lambda: False)
    monkeypatch.setattr(vllm_cpu, "build_llm", lambda path, **kw: built.update(kw) or "llm")
    monkeypatch.setattr(vllm_cpu, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert vllm_backend.VLLMGenerator.from_pretrained("/m").dtype == "bfloat16" == built["dtype"]
    monkeypatch.setattr(vllm_cpu, "cpu_flags", lambda: {"avx2"})
    assert vllm_backend.VLLMGenerator.from_pretrained("/m").dtype == "float32" == built["dtype"]
    assert vllm_backend.VLLMGenerator.from_pretrained("/m", dtype="bfloat16").dtype == "bfloat16" == built["dtype"]


@pytest.fixture(scope="module")
def smollm2():
    if not vllm_cpu.available():
        pytest.skip("`import vllm` fails in this Python")
    from rstar2_agent.engine.models import prepare_default_model

    path = prepare_default_model()
    # float32 as the transformers reference (auto would pick bfloat16 on a CPU with bf16 instructions)
    gen = vllm_backend.VLLMGenerator.from_pretrained(path, max_model_len=1024, max_num_seqs=8, kv_cache_gib=1,
                                                     dtype="float32")
    return path, gen


PROMPTS = ["<|user|>:\nWhat is 17 * 23?\n<|assistant|>: Let's think step by step and solve the problem with code.",
           "<|user|>:\nCompute 2 ** 10 - 1.\n<|assistant|>: Let's think step by step and solve the problem with code."]
PARAMS = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "max_tokens": 40, "stop": ["\n\n", "."], "seed": None}


def test_greedy_steps_match_the_transformers_backend(smollm2):
    from rstar2_agent.math.backends import TransformersGenerator

    path, gen = smollm2
    assert gen.dtype == "float32" and str(gen.llm.llm_engine.model_config.dtype) == "torch.float32"
    ours = gen.generate(PROMPTS, 1, PARAMS)
    reference = TransformersGenerator.from_pretrained(path).generate(PROMPTS, 1, PARAMS)
    assert [[c.text for c in row] for row in ours] == [[c.text for c in row] for row in reference]
    assert all(c.stop_reason in (None, "\n\n", ".") for row in ours for c in row)
    assert any(c.stop_reason is not None for row in ours for c in row)


def test_best_of_samples_more_and_keeps_the_n_most_likely(smollm2):
    _, gen = smollm2
    params = dict(PARAMS, temperature=1.0, best_of=6, max_tokens=12, stop=[])
    assert gen.sampling_params(2, params).n == 6
    rows = gen.generate(PROMPTS, 2, params)
    assert [len(row) for row in rows] == [2, 2]
    assert gen.sampling_params(3, dict(params, best_of=1)).n == 3
