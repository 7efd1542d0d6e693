"""``run SETTING`` (a registered setting), ``unlearn`` (your folders), ``methods`` and ``settings`` (what exists)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from clipforget.methods.registry import available_methods, get_method, override_config, seed_config
from clipforget.pipeline.run import RunResult, run_method
from clipforget.settings import SIZE_PRESETS, available_settings, get_setting

from .common import add_folder_args, add_model_args, load_model, progress_printer


def add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="ours", help="unlearning method (see `methods`)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="run the full network at every step (for checking; by default each image goes once "
                             "through the layers before the first one the method can change)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                        help="change one of the method's settings, e.g. --set remind.steps=40 (repeatable; values "
                             "are read as JSON; the run folder's config.json records them)")
    add_model_args(parser)
    add_folder_args(parser)


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--forget-class", default=None, help="class to forget (cifar10, style, subgroup)")
    parser.add_argument("--forget-style", default=None, help="style setting: the style to forget")
    parser.add_argument("--imagenet-root", default=None, help="living17: ImageNet folder with <wnid>/ sub-folders")
    parser.add_argument("--size", default=None, choices=SIZE_PRESETS,
                        help="data sizes: quick (seconds) | small (the CPU benchmarks) | paper")


def setting_options(args: argparse.Namespace) -> dict[str, Any]:
    """The setting flags that were given (the setting refuses those it does not take)."""
    given = {"forget_class": args.forget_class, "forget_style": args.forget_style,
             "imagenet_root": args.imagenet_root}
    return {k: v for k, v in given.items() if v is not None}


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run one of the paper's settings")
    run.add_argument("setting", help=f"one of: {', '.join(available_settings())}")
    add_setting_options(run)
    add_run_args(run)
    run.set_defaults(func=cmd_run)

    unlearn = sub.add_parser("unlearn", help="forget the images of one folder, keep another's")
    unlearn.add_argument("--forget", required=True, help="folder (or .zip) of images to forget")
    unlearn.add_argument("--retain", required=True, help="folder (or .zip) of images to keep")
    unlearn.add_argument("--label", required=True, help="the coarse label text the forget images should lose")
    unlearn.add_argument("--retain-label", default=None,
                         help="label of every retain image (default: its sub-folder name)")
    unlearn.add_argument("--classes", default="", help="extra zero-shot class names, comma separated")
    unlearn.add_argument("--calibration", default=None, help="folder with forget/ and retain/ for choosing alpha")
    unlearn.add_argument("--forget-prompt", action="append", default=[], dest="forget_prompts", metavar="TEXT",
                         help="a text the forget images must stop matching, besides the label and the names the "
                              "method finds itself (repeatable)")
    add_run_args(unlearn)
    unlearn.set_defaults(func=cmd_unlearn)

    sub.add_parser("methods", help="list the unlearning methods").set_defaults(func=cmd_methods)
    sub.add_parser("settings", help="list the settings and their options").set_defaults(func=cmd_settings)


def _execute(args: argparse.Namespace, setting_name: str, size: str, options: dict[str, Any]) -> int:
    config = get_method(args.method).config_cls()
    seed_config(config, args.seed)
    for assignment in args.overrides:  # before any work, so that a mistyped field costs nothing
        override_config(config, assignment)
    torch.manual_seed(args.seed)
    bundle = load_model(args)
    task, eval_sets = get_setting(setting_name).build(bundle.image_size, args.seed, size, **options)
    result = run_method(bundle, task, args.out, args.method, config, eval_sets, progress_printer(args.quiet),
                        extra={"seed": args.seed, "setting": setting_name, "size": size, "options": options,
                               "command": " ".join(sys.argv),
                               "overrides": list(args.overrides)}, prefix_cache=args.prefix_cache,
                        keep_pixels=False)
    _print_summary(result)
    return 0


def _print_summary(result: RunResult) -> None:
    m = result.metrics
    keys = ("target_acc", "target_acc_original", "retain_acc", "retain_acc_original", "score", "alpha",
            "stage_seconds", "method_seconds", "evaluation_seconds", "total_seconds", "peak_rss_mb", "skipped_count")
    print(json.dumps({k: m[k] for k in keys}, indent=2))
    for warning in m.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"run folder: {result.out_dir}")


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(args, args.setting, args.size or "paper", setting_options(args))


def cmd_unlearn(args: argparse.Namespace) -> int:
    options = {"forget_dir": args.forget, "retain_dir": args.retain, "label": args.label,
               "retain_label": args.retain_label, "calibration_dir": args.calibration,
               "classnames": [c.strip() for c in args.classes.split(",") if c.strip()] or None,
               "forget_prompts": args.forget_prompts or None}
    return _execute(args, "folders", "paper", options)


def cmd_methods(args: argparse.Namespace) -> int:
    for name in available_methods():
        print(f"{name:10s} {get_method(name).description}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    for name in available_settings():
        s = get_setting(name)
        choice = f" ({s.choice_option}: {', '.join(s.choices)})" if s.choice_option else ""
        print(f"{name:10s} {s.description}{choice}; options: {', '.join(s.options())}")
    return 0
