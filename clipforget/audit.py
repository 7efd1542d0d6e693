"""Retrieval audit from the command line: a prompt's top-k over a gallery index, original model vs theta(alpha).

    python -m clipforget audit --run runs/cifar10-airplane --index indexes/cifar10-test+imagenet \
        --prompt "a photo of an airplane" --subgroup cifar10/test/airplane/ --track airliner,warplane

The gallery embeddings under theta(alpha) come from the run's alpha grid for that index when it holds ``alpha``
(``python -m index_builder alpha-grid``), else from encoding the gallery once with theta(alpha). The prompt is encoded
by the original text tower (unlearning changes only the image tower).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .retrieval import GalleryIndex, compare, load_index, rank_of, search, subgroup_predicate, to_hits


@dataclass
class PromptAudit:
    """One prompt's audit: the top-k comparison and the full-gallery ranks of tracked rows before / after."""

    prompt: str
    comparison: Any  # clipforget.retrieval.Comparison
    subgroup_in_top_k: tuple[int, int] | None
    tracked: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            **self.comparison.summary(),
            "subgroup_in_top_k": self.subgroup_in_top_k,
            "top_before": [h.label for h in self.comparison.before],
            "top_after": [h.label for h in self.comparison.after],
            "tracked": self.tracked,
        }


def embeddings_at(run_dir: str | Path, gallery: GalleryIndex, alpha: float, batch_size: int = 256,
                  use_grid: bool = True) -> np.ndarray:
    """``N,D`` gallery embeddings under theta(alpha): the run's alpha grid if it has ``alpha``, else encoded now."""
    from .alpha_grid import AlphaGrid, run_models
    from .restore import souped_visual

    if use_grid and gallery.name in AlphaGrid.available(run_dir):
        grid = AlphaGrid.load(run_dir, gallery.name)
        i = grid.nearest(alpha)
        if abs(float(grid.alphas[i]) - alpha) < 1e-6 and len(grid) == len(gallery):
            return grid.embeddings(alpha)
    from index_builder.encoder import ClipImageEncoder
    from index_builder.reader import FolderReader, GalleryFile

    from .layers import VisualOnly

    original, theta_u = run_models(run_dir, "cuda" if torch.cuda.is_available() else "cpu")
    souped = souped_visual(original.model.visual, theta_u, original.visual_state(), alpha)
    encoder = ClipImageEncoder(original, VisualOnly(souped))
    files = [GalleryFile.from_record(r) for r in gallery.records]
    out = np.zeros((len(files), encoder.dim), np.float32)
    for batch in FolderReader(files, encoder.image_size, batch_size):
        if batch.failed:
            raise ValueError(f"gallery files changed since the index was built: {files[batch.failed[0][0]].path}")
        out[batch.positions] = encoder(batch.images)
    return out


def audit_prompt(
    bundle: Any,
    gallery: GalleryIndex,
    after: np.ndarray,
    prompt: str,
    k: int = 20,
    subgroup: str | None = None,
    track: tuple[str, ...] = (),
) -> PromptAudit:
    """Top-``k`` of ``prompt`` before (index embeddings) and after (``after``); ranks of rows labelled ``track``."""
    from .zeroshot import encode_text

    query = encode_text(bundle, [prompt])
    before = np.asarray(gallery.embeddings, dtype=np.float32)
    hits_b = to_hits(gallery, *(x[0] for x in search(before, query, k)))
    hits_a = to_hits(gallery, *(x[0] for x in search(after, query, k)))
    comparison = compare(hits_b, hits_a, subgroup)
    pred = subgroup_predicate(subgroup)
    counts = None if pred is None else (sum(map(pred, hits_b)), sum(map(pred, hits_a)))
    rows = [i for i, r in enumerate(gallery.records) if r.get("label") in set(track)]
    ranks_b, ranks_a = rank_of(before, query, rows), rank_of(after, query, rows)
    tracked = [{"label": gallery.records[i]["label"], "path": gallery.records[i]["path"], "rank_before": b,
                "rank_after": a} for i, b, a in zip(rows, ranks_b, ranks_a, strict=True)]
    return PromptAudit(prompt, comparison, counts, tracked)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="retrieval audit: a prompt's top-k before vs after unlearning")
    p.add_argument("--run", required=True, help="finished run folder")
    p.add_argument("--index", required=True, help="gallery index folder (python -m index_builder build)")
    p.add_argument("--prompt", action="append", required=True, help="text prompt (repeatable)")
    p.add_argument("--alpha", type=float, default=None, help="soup coefficient (default: the run's chosen alpha)")
    p.add_argument("-k", "--k", type=int, default=20, help="top-k")
    p.add_argument("--subgroup", default=None, help="path part of the forgotten images, e.g. cifar10/test/airplane/")
    p.add_argument("--track", default="", help="labels whose full-gallery ranks to report, comma separated")
    p.add_argument("--json", default=None, help="also write the audit as JSON here")
    p.add_argument("--data-root", default=None, help="data folder (else $CLIPFORGET_DATA)")
    p.add_argument("--cache-dir", default=None, help="cache folder (else $CLIPFORGET_CACHE)")
    p.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from .data import DataError
    from .models import create_model
    from .pipeline import run_status

    run = Path(args.run)
    state = run_status(run).get("state")
    if state != "done":
        raise DataError(f"run {run} is not a finished run (state: {state})")
    config = json.loads((run / "config.json").read_text(encoding="utf-8")) if (run / "config.json").is_file() else {}
    alpha = args.alpha
    if alpha is None:
        curve = run / "alpha_curve.json"
        alpha = json.loads(curve.read_text(encoding="utf-8"))["alpha"] if curve.is_file() else 1.0
    gallery = load_index(args.index)
    bundle = create_model(config.get("model", "embedded"), device="cuda" if torch.cuda.is_available() else "cpu")
    after = embeddings_at(run, gallery, float(alpha))
    track = tuple(t.strip() for t in args.track.split(",") if t.strip())
    results = []
    for prompt in args.prompt:
        audit = audit_prompt(bundle, gallery, after, prompt, args.k, args.subgroup, track)
        results.append(audit.as_dict())
        c = audit.comparison
        print(f'"{prompt}"  top-{len(c.before)}, original vs theta(alpha={alpha:.2f}):  {len(c.left)} left, '
              f"{len(c.entered)} entered")
        if audit.subgroup_in_top_k is not None:
            b, a = audit.subgroup_in_top_k
            drop = f"{100 * (1 - a / b):.0f} %" if b else "n/a"
            print(f"  subgroup {args.subgroup!r} in the top-{len(c.before)}: {b} -> {a} (fall {drop})")
        for t in audit.tracked:
            print(f"  {t['label']:>16s}: rank {t['rank_before']} -> {t['rank_after']} of {len(gallery)}")
        print("  before:", ", ".join(h.label for h in c.before))
        print("  after: ", ", ".join(h.label for h in c.after))
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run), "index": str(args.index), "alpha": alpha,
                                               "prompts": results}, indent=2), encoding="utf-8")
    return 0
