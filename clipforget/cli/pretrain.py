"""``pretrain NAME``: build a bundled model with its recipe and write ``assets/NAME/`` (or ``--out``)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from clipforget.core.paths import ASSETS_DIR

from .common import add_folder_args, apply_folders

# bundled model name -> the module of clipforget.pretraining holding its recipe (add_arguments + build)
RECIPES = {"embedded": "embedded", "embedded-cifar": "embedded_cifar"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="build a bundled model (writes assets/NAME/)")
    recipes = p.add_subparsers(dest="recipe", required=True)
    for name, module_name in RECIPES.items():
        module = importlib.import_module(f"clipforget.pretraining.{module_name}")
        r = recipes.add_parser(name, help=(module.__doc__ or "").split("\n")[0])
        r.add_argument("--out", default=None, help=f"checkpoint folder to write (default assets/{name})")
        module.add_arguments(r)
        add_folder_args(r)
        r.set_defaults(func=cmd_pretrain, recipe_module=module)


def cmd_pretrain(args: argparse.Namespace) -> int:
    apply_folders(args)
    out = Path(args.out) if args.out else ASSETS_DIR / args.recipe
    args.recipe_module.build(args, out)
    return 0
