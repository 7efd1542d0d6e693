"""Stand-in weights: an open_clip architecture (RN50, ViT-B-32, ...) with seeded random weights, as one local file.

``python -m clipforget pretrain standin --arch RN50 --out RN50-standin.pt`` then ``--model RN50:RN50-standin.pt``
runs the code ``RN50:openai`` would (clipforget.models.standin); for speed, memory and layer checks, not accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clipforget.core.paths import cache_dir
from clipforget.models.standin import STANDIN_ARCHS, write_standin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="RN50",
                        help=f"open_clip architecture name ({', '.join(STANDIN_ARCHS)}, or any of "
                             "open_clip.list_models())")
    parser.add_argument("--seed", type=int, default=0, help="the weights depend on the architecture and seed only")


def default_out(args: argparse.Namespace) -> Path:
    """Where the file goes without ``--out``: the cache, so that assets/ holds only the bundled models."""
    return cache_dir(getattr(args, "cache_dir", None)) / "standin" / f"{args.arch}-seed{args.seed}.pt"


def build(args: argparse.Namespace, out: Path) -> None:
    start = time.perf_counter()
    path = write_standin(args.arch, out, seed=args.seed)
    size_mb = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mb:.0f} MB, {time.perf_counter() - start:.1f} s); use --model {args.arch}:{path}")
