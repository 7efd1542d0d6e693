"""Choosing and building the FAISS index (inner product over unit-norm embeddings = cosine similarity).

The rule of :func:`choose_index_key` (autofaiss's ``get_optimal_index_keys_v2`` with an exact-search floor: audits
compare rankings, so approximate search errors must not pass as forgetting) and its search parameters are explained
in docs/index_builder.md ("Index type"); ``--index-key`` overrides it.
"""

from __future__ import annotations

from math import floor, log2, sqrt

import faiss
import numpy as np

from clipforget.retrieval.index import set_search_params

EXACT_THRESHOLD = 100_000
DEFAULT_INDEX_MEMORY = 16 * 2**30


def ivf_clusters(n: int) -> int:
    if n < 1_000_000:
        return int(2 ** round(log2(4 * sqrt(max(n, 1)))))
    return 16_384 if n < 10_000_000 else 65_536


def choose_index_key(n: int, dim: int, exact_threshold: int = EXACT_THRESHOLD,
                     max_index_memory: int = DEFAULT_INDEX_MEMORY) -> str:
    """The FAISS factory key for ``n`` vectors of dimension ``dim``: ``Flat`` below ``exact_threshold``, else
    ``HNSW{M}`` with ``M = min(32, floor((mem / (4 n) - d) / 2))`` if ``M >= 8``, else ``IVF{c},Flat``."""
    if n < exact_threshold:
        return "Flat"
    m_hnsw = floor((max_index_memory / (4 * n) - dim) / 2)
    if m_hnsw >= 8:
        return f"HNSW{min(m_hnsw, 32)}"
    return f"IVF{ivf_clusters(n)},Flat"


def search_params(key: str) -> str:
    """Default search-time parameters for a factory key (FAISS ``ParameterSpace`` string)."""
    if key.startswith("HNSW"):
        return "efSearch=128"
    if key.startswith("IVF"):
        clusters = int(key[3:].split(",")[0].split("_")[0])
        return f"nprobe={max(1, clusters // 16)}"
    return ""


def build_faiss_index(embeddings: np.ndarray, key: str) -> faiss.Index:
    """An inner-product index over ``embeddings`` (any float dtype; widened to float32), trained if it needs it."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = vectors.shape[1]
    index = faiss.IndexFlatIP(dim) if key == "Flat" else faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    set_search_params(index, search_params(key))
    return index
