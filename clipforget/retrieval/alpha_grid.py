"""Reading an alpha grid: gallery embeddings at every soup ``theta(alpha)`` of one run (built by index_builder).

A grid folder ``RUN/alpha_grid/<index name>/`` holds ``embeddings.f16.npy`` (float16 ``A,N,D``, row ``i`` = index
row ``i``, memory-mappable) and ``grid.json`` (alphas, count, how it was computed; written last). A grid over part of
a gallery lists the index rows it holds in ``grid.json``'s ``rows`` (row ``i`` = index row ``rows[i]``).
:class:`AlphaGrid` loads it; ``grid.embeddings(alpha)`` is a lookup of the nearest grid point, so moving the app's
alpha slider costs that lookup plus one search.

A grid may be *partial*: its run computed the chosen alpha first and fills the other grid points afterwards
(``grid.json``'s ``ready`` lists the positions computed so far; no ``ready``: all). :meth:`AlphaGrid.nearest` then
snaps to the nearest ready point, and :meth:`AlphaGrid.refresh` picks up points written since.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

GRID_DIR = "alpha_grid"
GRID_EMBEDDINGS = "embeddings.f16.npy"
GRID_INFO = "grid.json"


def alpha_grid_dir(run_dir: str | os.PathLike, index_name: str) -> Path:
    return Path(run_dir) / GRID_DIR / index_name


def same_alphas(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b))


class AlphaGrid:
    """A computed alpha grid: ``embeddings(alpha)`` returns the nearest grid point's ``N,D`` float32 embeddings."""

    def __init__(self, folder: str | os.PathLike, cache_size: int = 4):
        self.folder = Path(folder)
        self.info: dict[str, Any] = {}
        self._info_stamp: tuple[int, int] | None = None
        self.refresh()
        self.array = np.load(self.folder / GRID_EMBEDDINGS, mmap_mode="r")
        self.alphas = np.asarray(self.info["alphas"], dtype=np.float64)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._faiss: dict[int, Any] = {}
        self.cache_size = cache_size

    def refresh(self) -> bool:
        """Re-read ``grid.json`` when it changed on disk (grid points written since); returns whether it did."""
        stat = (self.folder / GRID_INFO).stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._info_stamp:
            return False
        self.info = json.loads((self.folder / GRID_INFO).read_text(encoding="utf-8"))
        self._info_stamp = stamp
        return True

    @property
    def ready(self) -> np.ndarray:
        """Positions of the grid points computed so far (all of them for a finished grid; a partial grid's
        ``grid.json`` is re-read when it changed)."""
        if self.info.get("ready") is not None:
            self.refresh()
        ready = self.info.get("ready")
        return np.arange(len(self.info["alphas"])) if ready is None else np.asarray(sorted(ready), dtype=np.int64)

    @property
    def complete(self) -> bool:
        return len(self.ready) == len(self.info["alphas"])

    @property
    def ready_alphas(self) -> list[float]:
        return [float(self.alphas[i]) for i in self.ready]

    @classmethod
    def load(cls, run_dir: str | os.PathLike, index_name: str) -> AlphaGrid:
        folder = alpha_grid_dir(run_dir, index_name)
        if not (folder / GRID_INFO).is_file():
            raise FileNotFoundError(f"no alpha grid for index '{index_name}' in {run_dir}; compute it first")
        return cls(folder)

    @staticmethod
    def available(run_dir: str | os.PathLike) -> list[str]:
        """Index names that have a finished grid in ``run_dir``."""
        root = Path(run_dir) / GRID_DIR
        return sorted(p.name for p in root.iterdir() if (p / GRID_INFO).is_file()) if root.is_dir() else []

    def __len__(self) -> int:
        return int(self.array.shape[1])

    @property
    def rows(self) -> np.ndarray | None:
        """The index rows this grid holds (``None``: all of them, in order)."""
        rows = self.info.get("rows")
        return None if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def index_dir(self) -> Path:
        return Path(self.info["index_dir"])

    def nearest(self, alpha: float) -> int:
        """Position of the ready grid point nearest to ``alpha``."""
        ready = self.ready
        return int(ready[np.abs(self.alphas[ready] - float(alpha)).argmin()])

    def embeddings(self, alpha: float) -> np.ndarray:
        """``N,D`` float32 unit-norm embeddings at the grid point nearest ``alpha`` (a few are kept in memory)."""
        i = self.nearest(alpha)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        emb = np.ascontiguousarray(self.array[i], dtype=np.float32)
        self._cache[i] = emb
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return emb

    def faiss_index(self, alpha: float) -> Any:
        """An exact FAISS inner-product index at the grid point nearest ``alpha``, built on first use."""
        import faiss

        i = self.nearest(alpha)
        if i not in self._faiss:
            emb = self.embeddings(alpha)
            index = faiss.IndexFlatIP(emb.shape[1])
            index.add(emb)
            self._faiss[i] = index
        return self._faiss[i]

    def search(self, text_features: np.ndarray | torch.Tensor, alpha: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` at ``alpha``: exact brute force (faster than building an index per alpha)."""
        from .search import search

        return search(self.embeddings(alpha), text_features, k)
