"""``python -m index_builder``: build / merge / add gallery indexes.

    python -m index_builder build --model embedded --gallery DIR [DIR ...] --out INDEX_DIR [--shard i/n]
    python -m index_builder build --engine ray --ray-address auto --gallery DIR [DIR ...] --out INDEX_DIR
    python -m index_builder merge --out INDEX_DIR SHARD_DIR [SHARD_DIR ...]
    python -m index_builder add --index INDEX_DIR --gallery DIR [DIR ...]

Alpha grids of finished runs: ``python -m clipforget alpha-grid`` (it reads run folders, which this package does not).
See docs/index_builder.md (sharded builds on a cluster, index type rule, label rule).
"""

from __future__ import annotations

import argparse
import json
import sys

from clipforget.models.factory import DEFAULT_MODEL

from .indexing import DEFAULT_INDEX_MEMORY, EXACT_THRESHOLD
from .reader import parse_shard


def _loader_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: min(8, CPUs))")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m index_builder", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="encode gallery folders into a FAISS index folder")
    build.add_argument("--model", default=DEFAULT_MODEL, help="a bundled name | NAME:TAG | checkpoint folder")
    build.add_argument("--gallery", nargs="+", required=True, help="gallery folders (labels: first sub-folder)")
    build.add_argument("--out", required=True, help="index folder to write")
    build.add_argument("--shard", default=None, help="i/n: build only the i-th (0-based) of n slices; then merge")
    build.add_argument("--index-key", default=None, help="force a FAISS factory key (default: size rule)")
    build.add_argument("--exact-threshold", type=int, default=EXACT_THRESHOLD, help="exact search below this size")
    build.add_argument("--max-index-memory", type=int, default=DEFAULT_INDEX_MEMORY, help="bytes, for HNSW's M")
    build.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="ray: one encoder actor per GPU (else CPU) of a Ray cluster, on Ray Data")
    build.add_argument("--ray-address", default=None, help="with --engine ray: auto | ray://host:port (default: local)")
    build.add_argument("--ray-workers", type=int, default=None, help="with --engine ray: encoder actors")
    build.add_argument("--no-fold-batchnorm", action="store_true",
                       help="run the tower as trained, BatchNorms unfolded (slower; for checking, docs D21)")
    _loader_args(build)

    merge = sub.add_parser("merge", help="join the shard folders of a sharded build")
    merge.add_argument("--out", required=True)
    merge.add_argument("shards", nargs="+", help="shard folders (each of 0..n-1 once)")
    merge.add_argument("--index-key", default=None)

    add = sub.add_parser("add", help="add the new images of gallery folders to an index")
    add.add_argument("--index", required=True)
    add.add_argument("--gallery", nargs="+", required=True)
    _loader_args(add)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from clipforget.core.errors import ClipforgetError

    try:
        if args.command == "build":
            from .build import BuildConfig, build

            cfg = BuildConfig(model=args.model, batch_size=args.batch_size, workers=args.workers,
                              shard=parse_shard(args.shard), device=args.device, index_key=args.index_key,
                              exact_threshold=args.exact_threshold, max_index_memory=args.max_index_memory,
                              fold_batchnorm=not args.no_fold_batchnorm)
            if args.engine == "ray":
                if args.shard:
                    raise ValueError("--shard is for the local engine; --engine ray shards by itself")
                from .ray_build import build_ray

                out = build_ray(args.gallery, args.out, cfg, args.ray_workers, args.ray_address)
            else:
                out = build(args.gallery, args.out, cfg)
        elif args.command == "merge":
            from .build import merge

            out = merge(args.shards, args.out, args.index_key)
        else:
            from .build import add

            out = add(args.index, args.gallery, args.batch_size, args.workers, args.device)
    except (ValueError, ClipforgetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = json.loads((out / "info.json").read_text(encoding="utf-8"))
    print(f"{out}: {info['count']} images, {info['skipped']} skipped, index {info['index_key']}, model {info['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
