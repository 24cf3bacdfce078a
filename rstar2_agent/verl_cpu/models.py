"""Hugging Face model folders for the CPU preset: verl's `actor_rollout_ref.model.path` must be a folder.

    python3 -m rstar2_agent.verl_cpu.models tiny  --out /tmp/rstar2-tiny   # 2-layer random Qwen3 (seconds)
    python3 -m rstar2_agent.verl_cpu.models default                        # SmolLM2-135M-Instruct (cached)

`tiny` saves rstar2_agent.engine.tiny's tokenizer and model; `default` is rstar2_agent.engine.models'
converted SmolLM2 folder (prints its path). The CPU preset resolves `actor_rollout_ref.model.path` through
`${rstar2_cpu_model:${cpu_model}}` (`resolve_model`), so `cpu_model=default|tiny|<folder>` picks the model
the same way `rstar2-agent train --model` does on the CPU engine.
"""

from __future__ import annotations

import argparse
import os


def save_tiny(out: str, seed: int = 0) -> str:
    """The tiny tokenizer and model (`build_model(tokenizer, seed)`) saved as a model folder at `out`, unless one
    is there already; its absolute path."""
    from rstar2_agent.engine.tiny import build_model, build_tokenizer

    out = os.path.abspath(os.path.expanduser(out))
    if not os.path.exists(os.path.join(out, "config.json")):
        tokenizer = build_tokenizer()
        model = build_model(tokenizer, seed)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        tokenizer.save_pretrained(out)
        model.save_pretrained(out)
    return out


def tiny_folder() -> str:
    from rstar2_agent.engine.models import cache_root

    return str(cache_root() / "models" / "tiny-qwen3")


def resolve_model(name: str) -> str:
    """"default" -> the SmolLM2 folder, "tiny" -> the saved tiny Qwen3 folder, anything else -> that folder."""
    if name == "default":
        return default_model()
    if name == "tiny":
        return save_tiny(tiny_folder())
    path = os.path.abspath(os.path.expanduser(name))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model {name!r} is not a folder: give a local Hugging Face model folder, "
                                f"`default` or `tiny`")
    return path


def default_model() -> str:
    from rstar2_agent.engine.models import prepare_default_model

    return prepare_default_model()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["tiny", "default"])
    parser.add_argument("--out", default=None, help="tiny only (default: the cache folder)")
    args = parser.parse_args(argv)
    print(save_tiny(args.out or tiny_folder()) if args.which == "tiny" else default_model())


if __name__ == "__main__":
    main()
