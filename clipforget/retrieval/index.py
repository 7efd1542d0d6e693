"""The gallery index format: what ``python -m index_builder build`` writes and :func:`load_index` reads.

An *index folder* (written by ``python -m index_builder build``) holds

* ``index.faiss`` -- a FAISS inner-product index over the unit-norm image embeddings (row ``i`` = image ``i``),
* ``embeddings.f16.npy`` -- the same embeddings, float16 ``N,D``, memory-mappable (the index holds exactly these),
* ``metadata.jsonl`` -- one JSON record per row: ``path``, ``label`` (first folder under the gallery; see
  ``docs/index_builder.md``) and ``gallery`` (the gallery root it came from),
* ``skipped.json`` -- files that were not indexed, with the reason,
* ``info.json`` -- model spec, dimension, count, FAISS index key; written last, so its presence marks a complete index.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipforget.core.errors import IndexLoadError

INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "embeddings.f16.npy"
METADATA_FILE = "metadata.jsonl"
SKIPPED_FILE = "skipped.json"
INFO_FILE = "info.json"


@dataclass
class GalleryIndex:
    """A loaded index folder: FAISS index, memory-mapped float16 embeddings and per-row metadata."""

    path: Path
    info: dict[str, Any]
    index: Any  # faiss.Index
    embeddings: np.ndarray  # float16 N,D (memory-mapped)
    records: list[dict[str, str]]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.records]

    @property
    def labels(self) -> list[str]:
        return [r["label"] for r in self.records]


def read_records(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a ``metadata.jsonl`` file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_index(path: str | os.PathLike, mmap: bool = True, gpu: bool | None = False) -> GalleryIndex:
    """Load an index folder; ``mmap=False`` reads the embeddings into memory instead of mapping them.

    ``gpu``: put the FAISS index on the GPU (``faiss-gpu``): ``True``, ``False`` (default) or ``None`` -- when FAISS
    has a GPU and the index is large (:mod:`clipforget.retrieval.gpu`); ``info["faiss_gpu"]`` says where it is.
    """
    import faiss

    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise IndexLoadError(f"{path} is not a finished index folder (no {INFO_FILE}); build it with python -m "
                             "index_builder")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    for name in (INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE):
        if not (path / name).is_file():
            raise IndexLoadError(f"index folder {path} lacks {name}")
    index = faiss.read_index(str(path / INDEX_FILE))
    embeddings = np.load(path / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
    records = read_records(path / METADATA_FILE)
    skipped_path = path / SKIPPED_FILE
    skipped = json.loads(skipped_path.read_text(encoding="utf-8")) if skipped_path.is_file() else []
    if not (index.ntotal == len(embeddings) == len(records) == info.get("count", len(records))):
        raise IndexLoadError(f"index folder {path} is inconsistent: faiss {index.ntotal}, embeddings "
                             f"{len(embeddings)}, metadata {len(records)}, info {info.get('count')} rows")
    set_search_params(index, info.get("search_params", ""))
    from .gpu import index_to_gpu, wants_gpu

    info["faiss_gpu"] = False
    if wants_gpu(index.ntotal, gpu):
        index, info["faiss_gpu"] = index_to_gpu(index)
    return GalleryIndex(path, info, index, embeddings, records, skipped)


def set_search_params(index: Any, params: str) -> None:
    """Apply FAISS search-time parameters (a ``ParameterSpace`` string such as ``efSearch=128``; empty: none)."""
    if params:
        import faiss

        faiss.ParameterSpace().set_index_parameters(index, params)
