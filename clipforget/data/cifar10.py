"""CIFAR-10 from ``<data root>/cifar10/<split>/<class>/*.jpg``, decoded once and cached as arrays."""

from __future__ import annotations

import hashlib
import os

import numpy as np
from PIL import Image

from clipforget.core.atomic import write_atomic
from clipforget.core.errors import DataError
from clipforget.core.paths import cache_dir, data_root

from .images import ImageSet, arrays_to_imageset

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VEHICLES = frozenset({"airplane", "automobile", "ship", "truck"})


def coarse_label(cifar_class: str) -> str:
    """The coarse group of a CIFAR-10 class: ``vehicle`` or ``animal``."""
    return "vehicle" if cifar_class in VEHICLES else "animal"


def load_cifar10_arrays(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 ``split`` as (uint8 ``N,32,32,3``, int64 labels), decoded once and cached as ``.npz``.

    Reads ``<data root>/cifar10/<split>/<class>/*.jpg``; where that folder is absent, falls back to torchvision's
    download (needs network) into the cache.
    """
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10 split must be train or test, not {split!r}")
    folder = data_root(root) / "cifar10" / split
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    cached = cache_dir() / "datasets" / f"cifar10-{split}-{key}.npz"
    if cached.is_file():
        with np.load(cached) as npz:
            return npz["images"], npz["labels"]
    if folder.is_dir():
        images, labels = [], []
        for class_id, name in enumerate(CIFAR10_CLASSES):
            for path in sorted((folder / name).glob("*.jpg")):
                with Image.open(path) as img:
                    images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
                labels.append(class_id)
        if not images:
            raise DataError(f"no CIFAR-10 images under {folder}")
        arrays = np.stack(images), np.asarray(labels, dtype=np.int64)
    else:
        arrays = _download_cifar10(split)
    write_atomic(cached, lambda tmp: np.savez(open(tmp, "wb"), images=arrays[0], labels=arrays[1]))
    return arrays


def _download_cifar10(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(cache_dir() / "torchvision"), train=split == "train", download=True)
    except Exception as err:
        raise DataError(f"CIFAR-10 not found under the data root ({data_root()}) and could not be downloaded: {err}. "
                        "Point --data-root / CLIPFORGET_DATA at a folder holding cifar10/{train,test}/<class>/*.jpg"
                        ) from err
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def cifar10(split: str, size: int, classes: tuple[str, ...] | None = None, per_class: int | None = None,
            offset: int = 0, root: str | os.PathLike | None = None, seed: int | None = None) -> ImageSet:
    """CIFAR-10 images of ``classes`` (default all): ``per_class`` of each from ``offset`` on.

    The order inside a class is the file order, or a permutation drawn from ``seed`` -- the same seed always gives
    the same order, so slices at different offsets never overlap.
    """
    images, labels = load_cifar10_arrays(split, root)
    classes = classes or CIFAR10_CLASSES
    unknown = set(classes) - set(CIFAR10_CLASSES)
    if unknown:
        raise DataError(f"not CIFAR-10 classes: {sorted(unknown)}; choose from {', '.join(CIFAR10_CLASSES)}")
    index: list[int] = []
    for name in classes:
        ids = np.flatnonzero(labels == CIFAR10_CLASSES.index(name))
        if seed is not None:
            ids = ids[np.random.default_rng(seed).permutation(len(ids))]
        ids = ids[offset : offset + per_class if per_class else None]
        index.extend(ids.tolist())
    names = [CIFAR10_CLASSES[labels[i]] for i in index]
    paths = [f"cifar10/{split}/{n}/{i:05d}" for n, i in zip(names, index, strict=True)]
    return arrays_to_imageset(images[index], names, size, paths)
