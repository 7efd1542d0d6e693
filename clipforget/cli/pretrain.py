"""``pretrain NAME``: build a bundled model with its recipe and write ``assets/NAME/`` (or ``--out``)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from clipforget.core.paths import ASSETS_DIR

from .common import add_folder_args

# recipe name -> the module of clipforget.pretraining holding it (add_arguments + build, optionally default_out):
# the bundled models, and `standin` (an open_clip architecture with seeded random weights, in one file)
RECIPES = {"embedded": "embedded", "embedded-cifar": "embedded_cifar", "standin": "standin"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="build a bundled model (writes assets/NAME/) or a stand-in weights file")
    recipes = p.add_subparsers(dest="recipe", required=True)
    for name, module_name in RECIPES.items():
        module = importlib.import_module(f"clipforget.pretraining.{module_name}")
        r = recipes.add_parser(name, help=(module.__doc__ or "").split("\n")[0])
        default = "a file in the cache's standin/" if hasattr(module, "default_out") else f"assets/{name}"
        r.add_argument("--out", default=None, help=f"checkpoint to write (default {default})")
        module.add_arguments(r)
        add_folder_args(r)
        r.set_defaults(func=cmd_pretrain, recipe_module=module)


def cmd_pretrain(args: argparse.Namespace) -> int:
    module = args.recipe_module
    if args.out:
        out = Path(args.out)
    else:
        out = module.default_out(args) if hasattr(module, "default_out") else ASSETS_DIR / args.recipe
    module.build(args, out)
    return 0
