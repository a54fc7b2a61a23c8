"""The `terrarium` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.config import ConfigError, load_config


def cmd_init_model(args: argparse.Namespace) -> int:
    from rollout.corpus import harness_corpus
    from rollout.tiny_model import build_tiny_model

    config = load_config(args.config, args.overrides)
    spec = config.model.tiny.model_copy(update={"seed": args.seed}) if args.seed is not None else config.model.tiny
    out = Path(args.dir)
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} exists and is not empty", file=sys.stderr)
        return 2
    if out.exists():
        out.rmdir()
    build_tiny_model(out, spec, harness_corpus())
    print(f"built tiny {spec.num_hidden_layers}-layer Qwen2 model (seed {spec.seed}) in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="terrarium", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    init_model = sub.add_parser("init-model", help="build the tiny local model in Hugging Face format")
    init_model.add_argument("dir", help="output directory (created)")
    init_model.add_argument("--seed", type=int, default=None, help="weight init seed (default: config's)")
    init_model.add_argument("--config", default=None, help="config YAML whose model.tiny spec to use")
    init_model.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.tiny.hidden_size=256")
    init_model.set_defaults(func=cmd_init_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
