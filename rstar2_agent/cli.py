"""`rstar2-agent` command line. Sub-commands:

    rstar2-agent train [--config-name NAME] [--model PATH] [--resume] [key=value ...]
                                                 GRPO-RoC training (see `rstar2_agent.engine.run`)
    rstar2-agent judge serve|workers|up|demo     the code judge (see `code_judge.cli`)
    rstar2-agent math search --qaf FILE --custom_cfg NAME|PATH --model_dir DIR [key=value ...]
                                                 rStar-Math tree search (see `rstar2_agent.math.run`)
    rstar2-agent math extract-sft|extract-pairs TREES... --output FILE
                                                 SFT traces / PPM pairs from search trees (`rstar2_agent.math.extract`)
    rstar2-agent math sft|ppm --model_name_or_path DIR --train_file FILE --output_dir DIR [Trainer flags]
                                                 policy SFT / PPM training (`rstar2_agent.math.sft`, `.ppm_train`)
    rstar2-agent eval --data FILE|bundled [--base-url URL --model NAME | --model-dir DIR] [--n 16 ...]
                                                 evaluate a model with the training agent loop (`rstar2_agent.eval.cli`)
"""

from __future__ import annotations

import argparse
import sys

from code_judge import cli as judge_cli
from code_judge.config import ConfigError
from rstar2_agent.engine import run as train_cli
from rstar2_agent.eval import cli as eval_cli
from rstar2_agent.math import run as math_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rstar2-agent", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    train_cli.add_command(sub)
    judge = sub.add_parser("judge", help="the code execution service")
    judge_cli.add_commands(judge.add_subparsers(dest="judge_command", required=True))
    math_cli.add_command(sub)
    eval_cli.add_command(sub)
    return ap


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
