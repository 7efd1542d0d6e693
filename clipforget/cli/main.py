"""Command line: ``python -m clipforget COMMAND`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import sys

from clipforget.core.errors import ClipforgetError

from . import audit, bench, pretrain, report, run, stress, worker
from .common import apply_folders

# each has register(subparsers), setting `func(args) -> int`
COMMANDS = (run, bench, audit, stress, report, pretrain, worker)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipforget", description="Make a CLIP model forget a subgroup.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_folders(args)
    try:
        return args.func(args)
    except (ClipforgetError, ValueError, KeyError) as err:
        print(f"error: {str(err).strip(chr(39))}", file=sys.stderr)
        return 2
