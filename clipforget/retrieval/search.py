"""Text -> image search over gallery embeddings, full-gallery ranks, and before/after comparisons of the top-k.

Typical use (what the app and the audit do)::

    gallery = load_index("indexes/cifar10-test")
    before = text_to_image(bundle, gallery, "a photo of an airplane", k=20)
    after = text_to_image(bundle, gallery, "a photo of an airplane", k=20, embeddings=grid.embeddings(0.35))
    diff = compare(before, after, subgroup="airplane/")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .gpu import knn_gpu, wants_gpu
from .index import GalleryIndex


@dataclass(frozen=True)
class Hit:
    """One retrieved gallery image: its 1-based rank in the list, row id, cosine score and metadata."""

    rank: int
    id: int
    score: float
    path: str
    label: str
    gallery: str = ""


Searchable = GalleryIndex | np.ndarray | torch.Tensor | Any  # Any: a faiss.Index
Subgroup = str | Callable[[Hit], bool] | None


def _as_queries(text_features: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(text_features, torch.Tensor):
        text_features = text_features.detach().float().cpu().numpy()
    queries = np.asarray(text_features, dtype=np.float32)
    return np.ascontiguousarray(queries[None] if queries.ndim == 1 else queries)


Features = np.ndarray | torch.Tensor


def search(index_or_embeddings: Searchable, text_features: Features, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product search: ``(scores float32 Q,k, ids int64 Q,k)``, best first, equal scores by row id.

    ``index_or_embeddings`` is a :class:`GalleryIndex` (its FAISS index is used), a ``faiss.Index``, or an ``N,D``
    array / tensor of unit-norm embeddings (any float dtype; searched exactly, brute force).
    ``text_features`` is one ``D`` vector or ``Q,D`` vectors. ``k`` larger than the gallery is clipped. Brute-force
    search over ``GPU_MIN_ROWS`` rows or more runs on the GPU where FAISS has one (:mod:`clipforget.retrieval.gpu`).
    A few queries run on one FAISS thread: on a busy CPU, OpenMP's thread barriers cost more than the search itself
    (11k x 256: p95 0.8 ms on one thread against 12 ms on two, see BENCHMARKS.md).
    """
    import faiss

    queries = _as_queries(text_features)
    target = index_or_embeddings.index if isinstance(index_or_embeddings, GalleryIndex) else index_or_embeddings
    if isinstance(target, torch.Tensor):
        target = target.detach().cpu().numpy()
    with _faiss_threads(len(queries)):
        if isinstance(target, np.ndarray):
            matrix = np.ascontiguousarray(target, dtype=np.float32)
            k = min(k, len(matrix))
            if k == 0:
                return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            if wants_gpu(len(matrix), None):
                scores, ids = knn_gpu(queries, matrix, k)
            else:
                scores, ids = faiss.knn(queries, matrix, k, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            scores, ids = target.search(queries, min(k, target.ntotal))
    order = np.lexsort((ids, -scores), axis=1)  # score descending, ties by row id
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1).astype(np.int64)


@contextmanager
def _faiss_threads(n_queries: int, max_single_thread: int = 8) -> Iterator[None]:
    import faiss

    if n_queries > max_single_thread:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def rank_of(embeddings: Features, text_features: Features, ids: Sequence[int]) -> list[int]:
    """1-based rank of each row ``ids`` in the full ranking of the gallery for one query (exact, numpy)."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    query = _as_queries(text_features)[0]
    sims = np.asarray(embeddings, dtype=np.float32) @ query
    return [int((sims > sims[i]).sum()) + 1 for i in ids]


def to_hits(gallery: GalleryIndex, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
    """One query's search result (1-D ``scores``/``ids``) as :class:`Hit` records; FAISS's ``-1`` padding dropped."""
    hits = []
    for rank, (score, row) in enumerate(zip(scores.tolist(), ids.tolist(), strict=True), start=1):
        if row < 0:
            continue
        rec = gallery.records[row]
        hits.append(Hit(rank, int(row), float(score), rec["path"], rec.get("label", ""), rec.get("gallery", "")))
    return hits


@torch.no_grad()
def text_to_image(bundle: Any, index: GalleryIndex, prompt: str, k: int = 20,
                  embeddings: np.ndarray | torch.Tensor | None = None) -> list[Hit]:
    """Top-``k`` gallery images for ``prompt``.

    The prompt is encoded by ``bundle``'s text tower (unlearning changes only the image tower, so the original
    bundle serves before and after). Without ``embeddings`` the gallery's FAISS index is searched (the model the
    index was built with); pass ``embeddings`` (``N,D``, same rows, e.g. ``AlphaGrid.embeddings(alpha)``) to rank
    the same gallery as another image tower sees it.
    """
    from clipforget.models.encode import encode_text

    query = encode_text(bundle, [prompt])
    scores, ids = search(index if embeddings is None else embeddings, query, k)
    return to_hits(index, scores[0], ids[0])


def subgroup_predicate(subgroup: Subgroup) -> Callable[[Hit], bool] | None:
    """A string selects hits whose path contains it (``/`` and ``\\`` treated alike); a callable is used as is."""
    if subgroup is None or callable(subgroup):
        return subgroup
    needle = str(subgroup).replace("\\", "/")
    return lambda hit: needle in hit.path.replace("\\", "/")


@dataclass
class Comparison:
    """Before/after top-k lists; what left and entered; the subgroup's share (``None`` without subgroup)."""

    before: list[Hit]
    after: list[Hit]
    left: list[Hit]  # in before, not in after (with their before rank)
    entered: list[Hit]  # in after, not in before (with their after rank)
    share_before: float | None = None
    share_after: float | None = None
    rank_change: dict[int, tuple[int | None, int | None]] = field(default_factory=dict)  # id -> (before, after)

    @property
    def share_drop(self) -> float | None:
        """Relative fall of the subgroup's share, ``1 - after/before`` (``None`` if undefined)."""
        if not self.share_before or self.share_after is None:
            return None
        return 1.0 - self.share_after / self.share_before

    def summary(self) -> dict[str, Any]:
        return {"k": len(self.before), "left": len(self.left), "entered": len(self.entered),
                "share_before": self.share_before, "share_after": self.share_after, "share_drop": self.share_drop}


def compare(before_hits: Sequence[Hit], after_hits: Sequence[Hit], subgroup: Subgroup = None) -> Comparison:
    """Compare two top-k lists of the same gallery (matched by row id).

    ``subgroup``: a path substring (e.g. ``"airplane/"``) or a ``Hit -> bool`` predicate; its share of each list is
    reported as a fraction of the list length.
    """
    before, after = list(before_hits), list(after_hits)
    ids_before, ids_after = {h.id: h.rank for h in before}, {h.id: h.rank for h in after}
    left = [h for h in before if h.id not in ids_after]
    entered = [h for h in after if h.id not in ids_before]
    rank_change = {i: (ids_before.get(i), ids_after.get(i)) for i in {**ids_before, **ids_after}}
    pred = subgroup_predicate(subgroup)
    share_before = share_after = None
    if pred is not None:
        share_before = sum(map(pred, before)) / len(before) if before else 0.0
        share_after = sum(map(pred, after)) / len(after) if after else 0.0
    return Comparison(before, after, left, entered, share_before, share_after, rank_change)


def top_k_rows(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` highest ``scores``, best first (ties: lower position first), never a position where
    the boolean mask ``excluded`` is set (e.g. images the model was trained on, for a held-out audit)."""
    scores = np.asarray(scores, dtype=np.float32)
    if excluded is not None and excluded.any():
        allowed = np.flatnonzero(~excluded)
        return allowed[top_k_rows(scores[allowed], k)]
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return top[np.lexsort((top, -scores[top]))]
