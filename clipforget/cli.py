"""Command line: ``python -m clipforget run cifar10 ...`` and ``python -m clipforget unlearn ...``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import torch

# Modules that add sub-commands: each has add_subcommand(subparsers) and sets `func` on its parser.
EXTRA_COMMANDS = ("clipforget.bench", "clipforget.audit")


def _progress_printer():
    last = {"stage": None}

    def progress(stage: str, fraction: float, message: str) -> None:
        if stage != last["stage"]:
            last["stage"] = stage
            print(f"[{stage}]", flush=True)
        print(f"  {fraction * 100:5.1f}%  {message}", flush=True)

    return progress


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", help="embedded | open_clip NAME:TAG (RN50:openai) | folder")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="ours", help="unlearning method (see `methods`)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--data-root", default=None, help="data folder (else $CLIPFORGET_DATA, else ../shared/data)")
    parser.add_argument("--cache-dir", default=None, help="cache folder (else $CLIPFORGET_CACHE)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipforget", description="Make a CLIP model forget a subgroup.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one of the paper's settings")
    run.add_argument("setting", choices=["cifar10"], help="cifar10: out-of-domain class forgetting")
    run.add_argument("--forget-class", required=True, help="CIFAR-10 class to forget, e.g. airplane")
    _common(run)

    unlearn = sub.add_parser("unlearn", help="forget the images of one folder, keep another's")
    unlearn.add_argument("--forget", required=True, help="folder (or .zip) of images to forget")
    unlearn.add_argument("--retain", required=True, help="folder (or .zip) of images to keep")
    unlearn.add_argument("--label", required=True, help="the coarse label text the forget images should lose")
    unlearn.add_argument("--retain-label", default=None,
                         help="label of every retain image (default: its sub-folder name)")
    unlearn.add_argument("--classes", default="", help="extra zero-shot class names, comma separated")
    unlearn.add_argument("--calibration", default=None, help="folder with forget/ and retain/ for choosing alpha")
    _common(unlearn)

    sub.add_parser("methods", help="list the unlearning methods")
    for module_name in EXTRA_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        module.add_subcommand(sub)  # sets a `func(args) -> int` default on its parser
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .methods import available_methods, get_method
    from .models import ModelLoadError
    from .retrieval import IndexLoadError

    if args.command == "methods":
        for name in available_methods():
            print(f"{name:10s} {get_method(name).description}")
        return 0
    if args.data_root:
        os.environ["CLIPFORGET_DATA"] = args.data_root
    if args.cache_dir:
        os.environ["CLIPFORGET_CACHE"] = args.cache_dir
    try:
        if hasattr(args, "func"):
            return args.func(args)
        return _run(args)
    except (ModelLoadError, DataError, IndexLoadError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _run(args: argparse.Namespace) -> int:
    from .models import create_model
    from .pipeline import run_method
    from .settings import cifar10_class_task, folder_task

    progress = (lambda *a: None) if args.quiet else _progress_printer()
    torch.manual_seed(args.seed)
    bundle = create_model(args.model, device=_device(args.device), build_if_missing=True)
    if args.command == "run":
        task, eval_sets = cifar10_class_task(args.forget_class, bundle.image_size, args.seed)
    else:
        extra = [c.strip() for c in args.classes.split(",") if c.strip()]
        task, eval_sets = folder_task(
            args.forget, args.retain, args.label, bundle.image_size, extra, args.retain_label, args.calibration,
            seed=args.seed,
        )
    from .methods import get_method, seed_config

    spec = get_method(args.method)
    config = spec.config_cls()
    seed_config(config, args.seed)
    result = run_method(bundle, task, Path(args.out), args.method, config, eval_sets, progress,
                        extra={"seed": args.seed, "command": " ".join(sys.argv)})
    m = result.metrics
    summary = {k: m[k] for k in ("target_acc", "target_acc_original", "retain_acc", "retain_acc_original",
                                 "score", "alpha", "stage_seconds", "total_seconds", "peak_rss_mb",
                                 "skipped_count")}
    print(json.dumps(summary, indent=2))
    print(f"run folder: {result.out_dir}")
    return 0
