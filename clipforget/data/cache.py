"""Decoded image sets cached as ``.npz`` under ``<cache>/datasets``: decoding is the slow part on a CPU machine.

The key hashes the reader's name, its source path, the image size and a format version, so another data root or
size never reuses a stale array. Writes are atomic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from clipforget.core.atomic import write_atomic
from clipforget.core.paths import cache_dir

from .images import ImageSet

FORMAT_VERSION = 1


def cached_imageset(reader: str, source: Path, size: int, build: Callable[[], ImageSet],
                    folder: Path | None = None) -> ImageSet:
    """``build()`` once per (reader, source, size); later calls load the ``.npz`` from ``folder`` (default
    ``<cache>/datasets``)."""
    key = hashlib.sha1(f"{reader}|{Path(source).resolve()}|{size}|v{FORMAT_VERSION}".encode()).hexdigest()[:12]
    path = (folder or cache_dir() / "datasets") / f"{reader}-{size}px-{key}.npz"
    if path.is_file():
        with np.load(path) as npz:
            skipped = [tuple(s.split("\t", 1)) for s in npz["skipped"].tolist()]
            return ImageSet(torch.from_numpy(npz["images"]), npz["labels"].tolist(), npz["paths"].tolist(),
                            [(p, r) for p, r in skipped])
    images = build()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, images=images.images.numpy(), labels=np.asarray(images.labels, dtype=str),
                     paths=np.asarray(images.paths, dtype=str),
                     skipped=np.asarray([f"{p}\t{r}" for p, r in images.skipped], dtype=str))

    write_atomic(path, write)
    return images
