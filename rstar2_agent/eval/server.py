"""A small OpenAI-compatible completions server over the CPU engine's transformers generator.

    python3 -m rstar2_agent.eval.server --model-dir DIR [--port 8000] [--max-num-seqs 32] [--text-only]

`POST /v1/completions` takes `prompt` as text or token ids (`--text-only` refuses ids with 400, as a server
without token-id prompts would), `n`, `temperature`, `top_p`, `top_k`, `max_tokens`, `stop` (strings) and
`seed`; each choice has `text`, `token_ids`, `finish_reason` ("stop" | "length") and vLLM's `stop_reason`.
`GET /v1/models` lists the one model. Concurrent requests are decoded together by `BatchingGenerator`
(continuous batching on one KV cache; a turn ends at EOS, at a stop string, or at `max_tokens`; a turn cut at a
stop string comes back with EOS appended, as the engine's generator returns it).

It is what the eval's tests and `benchmarks/eval_throughput.py` serve a model folder with where vLLM is not
installed; anywhere else, `vllm serve` or SGLang is the server to use.
"""

# no `from __future__ import annotations`: FastAPI reads the request model from the live annotation

import argparse
import asyncio
import itertools
import time
from typing import Any, Optional, Union

__all__ = ["build_app", "main"]


def build_app(model_dir: str, max_num_seqs: int = 32, text_only: bool = False, name: Optional[str] = None,
              seed: int = 0):
    import torch
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rstar2_agent.engine.generator import BatchingGenerator

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model_name = name or model_dir
    engines: dict[tuple, BatchingGenerator] = {}
    ids = itertools.count()

    def engine(stops: tuple) -> BatchingGenerator:
        if stops not in engines:
            engines[stops] = BatchingGenerator(model, tokenizer, max_num_seqs=max_num_seqs, stop_strings=stops,
                                               seed=seed)
        return engines[stops]

    class Completion(BaseModel):
        model: Optional[str] = None
        prompt: Union[str, list[int]]
        n: int = 1
        temperature: float = 1.0
        top_p: float = 1.0
        top_k: int = -1
        max_tokens: int = 16
        stop: Optional[Union[str, list[str]]] = None
        seed: Optional[int] = None

        model_config = {"extra": "allow"}

    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.post("/v1/completions")
    async def completions(req: Completion) -> dict[str, Any]:
        if isinstance(req.prompt, list):
            if text_only:
                raise HTTPException(400, "this server takes text prompts only")
            prompt_ids = list(req.prompt)
        else:
            prompt_ids = tokenizer.encode(req.prompt, add_special_tokens=False)
        stops = tuple(s for s in ([req.stop] if isinstance(req.stop, str) else (req.stop or [])) if s)
        gen = engine(stops)
        params = {"temperature": req.temperature, "top_p": req.top_p, "top_k": max(req.top_k, 0),
                  "max_tokens": max(1, req.max_tokens)}
        rid = f"{req.seed if req.seed is not None else next(ids)}"
        outs = await asyncio.gather(*(gen(f"{rid}-{j}", prompt_ids, params) for j in range(max(1, req.n))))
        choices = []
        for j, out in enumerate(outs):
            token_ids = list(out.token_ids)
            body = token_ids[:-1] if token_ids and token_ids[-1] in gen.eos_ids else token_ids
            text = tokenizer.decode(body, skip_special_tokens=False)
            stop = next((s for s in stops if text.endswith(s)), None)
            finish = "stop" if (stop is not None or len(body) < len(token_ids)) else "length"
            choices.append({"index": j, "text": text, "token_ids": token_ids, "finish_reason": finish,
                            "stop_reason": stop})
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": sum(len(c["token_ids"]) for c in choices)}
        return {"id": f"cmpl-{next(ids)}", "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": choices, "usage": usage}

    return app


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--text-only", action="store_true", help="refuse token-id prompts (400)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: usable cores + 2)")
    args = ap.parse_args(argv)
    import uvicorn

    from rstar2_agent.engine.trainer import set_threads

    set_threads(args.threads)
    app = build_app(args.model_dir, args.max_num_seqs, args.text_only, args.served_model_name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
