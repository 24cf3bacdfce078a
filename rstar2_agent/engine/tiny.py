"""A tiny tokenizer and a tiny random Qwen3 model, built in-process: the `tiny` model of the CPU engine.

No download is possible (or needed): the tokenizer is a byte-level BPE trained on a few lines of the chat
format, so any text encodes, and the model is a 2-layer Qwen3 (about 0.1M parameters). The test suite and the
`cpu_trainer_tiny` preset use it to run the whole recipe in seconds; it learns the tool-call format during the
cold start, but it is no model to measure accuracy with.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from rstar2_agent.rollout import load_chat_template

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    load_chat_template(),
    '<tool_call>\n{"name": "python_code_with_standard_io", "arguments": {"code": "print(6*7)", "input": ""}}\n</tool_call>',
    "<tool_response>\nTool call success\nstdout: 42\nexecution time: 0.01s\n</tool_response>",
    "Let me compute this with Python. The answer is \\boxed{42}. </reason> <answer>\\boxed{42}</answer>",
    "import numpy as np\nimport sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 4, x))\nfor i in range(10):",
    "0123456789 + - * / = ( ) [ ] { } , . : ; ' \" \\ # % ^ & | < > ? ! @ $ _ ~ `",
]


@functools.lru_cache(maxsize=1)
def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (any text encodes) with Qwen's ChatML special tokens and our chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = load_chat_template()
    return fast


def build_model(tokenizer, seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return Qwen3ForCausalLM(config).eval()
