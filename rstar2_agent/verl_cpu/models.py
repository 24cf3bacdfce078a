"""Hugging Face model folders for the CPU preset: verl's `actor_rollout_ref.model.path` must be a folder.

    python3 -m rstar2_agent.verl_cpu.models tiny  --out /tmp/rstar2-tiny   # 2-layer random Qwen3 (seconds)
    python3 -m rstar2_agent.verl_cpu.models default                        # SmolLM2-135M-Instruct (cached)

`tiny` saves rstar2_agent.engine.tiny's tokenizer and model; `default` is rstar2_agent.engine.models'
converted SmolLM2 folder (prints its path).
"""

from __future__ import annotations

import argparse
import os


def save_tiny(out: str) -> str:
    from rstar2_agent.engine.tiny import build_model, build_tokenizer

    out = os.path.abspath(os.path.expanduser(out))
    if not os.path.exists(os.path.join(out, "config.json")):
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        tokenizer.save_pretrained(out)
        model.save_pretrained(out)
    return out


def default_model() -> str:
    from rstar2_agent.engine.models import prepare_default_model

    return prepare_default_model()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["tiny", "default"])
    parser.add_argument("--out", default="/tmp/rstar2-agent-tiny-model")
    args = parser.parse_args(argv)
    print(save_tiny(args.out) if args.which == "tiny" else default_model())


if __name__ == "__main__":
    main()
