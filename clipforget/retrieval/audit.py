"""A retrieval audit of one prompt: its top-k before and after unlearning, and full-gallery ranks of tracked rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from clipforget.models.encode import encode_text
from clipforget.models.factory import ClipBundle

from .index import GalleryIndex
from .search import Comparison, compare, rank_of, search, subgroup_predicate, to_hits


@dataclass
class PromptAudit:
    """One prompt's audit: the top-k comparison and the full-gallery ranks of tracked rows before / after."""

    prompt: str
    comparison: Comparison
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


def audit_prompt(
    bundle: ClipBundle,
    gallery: GalleryIndex,
    after: np.ndarray,
    prompt: str,
    k: int = 20,
    subgroup: str | None = None,
    track: tuple[str, ...] = (),
) -> PromptAudit:
    """Top-``k`` of ``prompt`` before (index embeddings) and after (``after``); ranks of rows labelled ``track``.

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
    return PromptAudit(prompt, comparison, counts, tracked)
