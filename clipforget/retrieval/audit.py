"""A retrieval audit of one prompt: its top-k before and after unlearning, and full-gallery ranks of tracked rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipforget.models.encode import encode_text
from clipforget.models.factory import ClipBundle

from .index import GalleryIndex
from .search import Comparison, Hit, compare, rank_of, search, subgroup_predicate, to_hits


@dataclass
class PromptAudit:
    """One prompt's audit: the top-k comparison, per-group counts in the top-k, and full-gallery ranks of tracked
    rows before / after."""

    prompt: str
    comparison: Comparison
    subgroup_in_top_k: tuple[int, int] | None
    tracked: list[dict[str, Any]]
    groups_in_top_k: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def overlap(self) -> float:
        """Share of the original top-k still in the top-k after unlearning."""
        k = len(self.comparison.before)
        return 1.0 - len(self.comparison.left) / k if k else 1.0

    def median_ranks(self) -> tuple[float, float] | None:
        """Median full-gallery rank of the tracked rows, before and after (``None`` without tracked rows)."""
        if not self.tracked:
            return None
        return (float(np.median([t["rank_before"] for t in self.tracked])),
                float(np.median([t["rank_after"] for t in self.tracked])))

    def as_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, **self.comparison.summary(), "overlap": self.overlap,
                "subgroup_in_top_k": self.subgroup_in_top_k, "groups_in_top_k": self.groups_in_top_k,
                "tracked_median_rank": self.median_ranks(), "top_before": [h.label for h in self.comparison.before],
                "top_after": [h.label for h in self.comparison.after], "tracked": self.tracked}


def path_group(patterns: str) -> Callable[[Hit], bool]:
    """A hit predicate: the hit's path contains any of the comma-separated ``patterns``."""
    parts = [p.strip().replace("\\", "/") for p in patterns.split(",") if p.strip()]
    return lambda hit: any(p in hit.path.replace("\\", "/") for p in parts)


def audit_prompt(bundle: ClipBundle, gallery: GalleryIndex, after: np.ndarray, prompt: str, k: int = 20,
                 subgroup: str | None = None, track: tuple[str, ...] = (),
                 groups: dict[str, str] | None = None) -> PromptAudit:
    """Top-``k`` of ``prompt`` before (index embeddings) and after (``after``); ranks of rows labelled ``track``;
    per group (name -> comma-separated path parts) the counts in the top-k before and after.

    The prompt is encoded by the original text tower (unlearning changes only the image tower).
    """
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
    group_counts = {}
    for name, patterns in (groups or {}).items():
        pred = path_group(patterns)
        group_counts[name] = (sum(map(pred, hits_b)), sum(map(pred, hits_a)))
    return PromptAudit(prompt, comparison, counts, tracked, group_counts)
