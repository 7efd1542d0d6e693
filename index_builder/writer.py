"""Writer: embeddings + metadata -> an index folder (layout in :mod:`clipforget.retrieval`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from clipforget.core.atomic import write_atomic, write_json
from clipforget.retrieval.index import EMBEDDINGS_FILE, INDEX_FILE, INFO_FILE, METADATA_FILE, SKIPPED_FILE

from .indexing import DEFAULT_INDEX_MEMORY, EXACT_THRESHOLD, build_faiss_index, choose_index_key, search_params


def write_index_folder(out_dir: str | os.PathLike, embeddings: np.ndarray, records: list[dict[str, str]],
                       skipped: list[dict[str, str]], info: dict[str, Any], index_key: str | None = None,
                       exact_threshold: int = EXACT_THRESHOLD, max_index_memory: int = DEFAULT_INDEX_MEMORY,
                       index: faiss.Index | None = None) -> Path:
    """Write every file of an index folder; ``info.json`` goes last (its presence marks the folder complete).

    The FAISS index is built from the float16 embeddings widened to float32, so index and embeddings file agree.
    ``index``: an already built index over exactly these rows (incremental add), written instead of a new one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / INFO_FILE).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    emb16 = np.ascontiguousarray(embeddings, dtype=np.float16)
    if len(emb16) != len(records):
        raise ValueError(f"{len(emb16)} embeddings but {len(records)} metadata records")
    dim = int(emb16.shape[1]) if emb16.ndim == 2 else int(info.get("dim", 0))
    key = index_key or choose_index_key(len(emb16), dim, exact_threshold, max_index_memory)
    if index is None or index.ntotal != len(emb16):
        index = build_faiss_index(emb16.reshape(len(emb16), dim), key)
    write_atomic(out / INDEX_FILE, lambda tmp: faiss.write_index(index, tmp))
    write_atomic(out / EMBEDDINGS_FILE, lambda tmp: save_npy(tmp, emb16))
    write_atomic(out / METADATA_FILE, lambda tmp: _write_jsonl(tmp, records))
    write_json(out / SKIPPED_FILE, skipped)
    full_info = {**info, "dim": dim, "count": len(records), "index_key": key, "search_params": search_params(key),
                 "metric": "inner_product", "embeddings_dtype": "float16", "skipped": len(skipped),
                 "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(out / INFO_FILE, full_info)
    return out


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (no ``.npy`` appended), closing the file."""
    with open(path, "wb") as handle:
        np.save(handle, array)


def _write_jsonl(path: str, records: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")


class IndexWriter:
    """Collects encoded batches (in any order of arrival) and writes the folder once at :meth:`finish`."""

    def __init__(self, out_dir: str | os.PathLike, dim: int):
        self.out_dir = Path(out_dir)
        self.dim = dim
        self._chunks: list[np.ndarray] = []
        self.records: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []

    def add(self, embeddings: np.ndarray, records: list[dict[str, str]]) -> None:
        """Append ``embeddings`` (``B,D``; stored as float16) with one metadata record each."""
        if len(embeddings) != len(records):
            raise ValueError(f"{len(embeddings)} embeddings but {len(records)} records")
        self._chunks.append(np.asarray(embeddings, dtype=np.float16))
        self.records.extend(records)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append({"path": path, "reason": reason})

    def embeddings(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.dim), np.float16)

    def finish(self, info: dict[str, Any], **kwargs: Any) -> Path:
        """Write the folder (``kwargs`` go to :func:`write_index_folder`: index_key, exact_threshold, ...)."""
        return write_index_folder(self.out_dir, self.embeddings(), self.records, self.skipped, info, **kwargs)
