"""Readers of the embedded recipe's training and evaluation data, decoded once at model size and cached as ``.npz``.

They differ from ``clipforget.data``'s readers on purpose: labels are wnids / species folder names (not display names)
and the paths are the source files (zip members as ``<zip>::<member>``), which key the recipe's caches.

Every reader returns a :class:`clipforget.data.images.ImageSet`: uint8 ``N,3,S,S`` images made by
:func:`clipforget.data.images.to_model_size` (shorter side to ``S``, bicubic, centre crop), one text label per image,
the source paths (zip members as ``<zip>::<member>``) and the files skipped with their reason. Bad files never stop
a read.

Sources (under the data root, read in place, never copied):

* Tiny-ImageNet val: ``tiny-imagenet/val/<wnid>/*.JPEG``; label = wnid.
* monkeys10 train / val: ``monkeys10/<split>/<species>/*``; label = species folder name. Warts kept on purpose in the
  data (``train/nilgiri_langur/n9160.png`` is read; ``n9151jpg`` has no suffix and is skipped with the reason
  "not an image file type", like every clipforget reader).
* CIFAR-10 train / test: ``clipforget.data.cifar10``'s decoded arrays, resized to ``S`` with the same PIL path;
  label = class name.
* ImageNet samples: ``imagenet-samples/<wnid>_<name>.JPEG``; label = wnid (evaluation only).
* coco-mini: ``coco-mini/images/*.jpg`` with ``captions.json``; label = file name (evaluation only).

Caching: ``<cache>/<reader>-<S>px-<key>.npz`` where ``key`` hashes the reader, its source path, ``S`` and a
format version, so a different data root or size never reuses a stale array.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipforget.core import paths
from clipforget.core.errors import DataError
from clipforget.data.cifar10 import CIFAR10_CLASSES, load_cifar10_arrays
from clipforget.data.images import IMAGE_SUFFIXES, ImageSet, list_image_files, open_image, to_model_size

FORMAT_VERSION = 1


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else clipforget's data root (``$CLIPFORGET_DATA``, ...); raises when it is not a folder."""
    path = paths.data_root(root)
    if not path.is_dir():
        raise DataError(f"data root not found: {path}")
    return path


# --- cache ------------------------------------------------------------------------------------------------------


def _cache_path(cache: str | os.PathLike | None, reader: str, source: Path, size: int) -> Path:
    key = hashlib.sha1(f"{reader}|{source.resolve()}|{size}|v{FORMAT_VERSION}".encode()).hexdigest()[:12]
    folder = Path(cache) if cache else paths.cache_dir() / "readers"
    return folder / f"{reader}-{size}px-{key}.npz"


def _save(path: Path, images: ImageSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            images=images.images.numpy(),
            labels=np.asarray(images.labels, dtype=str),
            paths=np.asarray(images.paths, dtype=str),
            skipped=np.asarray([f"{p}\t{r}" for p, r in images.skipped], dtype=str),
        )
    os.replace(tmp, path)


def _load(path: Path) -> ImageSet:
    with np.load(path) as npz:
        skipped = [tuple(s.split("\t", 1)) for s in npz["skipped"].tolist()]
        return ImageSet(
            torch.from_numpy(npz["images"]),
            npz["labels"].tolist(),
            npz["paths"].tolist(),
            [(p, r) for p, r in skipped],
        )


def cached(
    reader: str, source: Path, size: int, build: Callable[[], ImageSet], cache: str | os.PathLike | None = None
) -> ImageSet:
    """``build()`` once per (reader, source, size); later calls load the ``.npz``."""
    path = _cache_path(cache, reader, source, size)
    if path.is_file():
        return _load(path)
    images = build()
    _save(path, images)
    return images


# --- decoding ---------------------------------------------------------------------------------------------------


def _stack(tensors: list[torch.Tensor], size: int) -> torch.Tensor:
    return torch.stack(tensors) if tensors else torch.zeros((0, 3, size, size), dtype=torch.uint8)


def decode_files(files: list[Path], labels: list[str], size: int) -> ImageSet:
    """Decode image files at ``size``; wrong suffixes and unreadable files are skipped with a reason."""
    tensors: list[torch.Tensor] = []
    kept: list[str] = []
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    for path, label in zip(files, labels, strict=True):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(path), "not an image file type"))
            continue
        try:
            tensors.append(to_model_size(open_image(path), size))
        except DataError as err:
            skipped.append((str(path), str(err)))
            continue
        kept.append(label)
        paths.append(str(path))
    return ImageSet(_stack(tensors, size), kept, paths, skipped)


def _folder_by_class(root: Path, size: int) -> ImageSet:
    """``root/<label>/<file>`` -> images labelled by their sub-folder."""
    files = [p for p in list_image_files(root) if len(p.relative_to(root).parts) == 2]
    return decode_files(files, [p.parent.name for p in files], size)


# --- readers ----------------------------------------------------------------------------------------------------


def tiny_imagenet_val(size: int, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """Tiny-ImageNet val (10,100 images, 50 per wnid); label = wnid. Evaluation only."""
    folder = data_root(root) / "tiny-imagenet" / "val"
    return cached("tiny-val", folder, size, lambda: _folder_by_class(folder, size), cache)


def monkeys10(split: str, size: int, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """monkeys10 ``train`` or ``val``; label = species folder name (``val`` is evaluation only)."""
    if split not in ("train", "val"):
        raise DataError(f"monkeys10 split must be train or val, not {split!r}")
    folder = data_root(root) / "monkeys10" / split
    return cached(f"monkeys10-{split}", folder, size, lambda: _folder_by_class(folder, size), cache)


def cifar10(split: str, size: int, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """All of CIFAR-10 ``split`` at ``size`` (clipforget's arrays, same PIL resize); label = class name."""
    folder = data_root(root) / "cifar10" / split

    def build() -> ImageSet:
        arrays, ids = load_cifar10_arrays(split, data_root(root))
        images = _stack([to_model_size(Image.fromarray(a), size) for a in arrays], size)
        names = [CIFAR10_CLASSES[i] for i in ids.tolist()]
        return ImageSet(images, names, [f"cifar10/{split}/{n}/{i:05d}" for i, n in enumerate(names)], [])

    return cached(f"cifar10-{split}", folder, size, build, cache)


def imagenet_samples(size: int, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """The 1,000 ImageNet sample images; label = wnid. Evaluation only."""
    folder = data_root(root) / "imagenet-samples"

    def build() -> ImageSet:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return decode_files(files, [p.name.split("_", 1)[0] for p in files], size)

    return cached("imagenet-samples", folder, size, build, cache)


@dataclass
class CaptionedImages:
    """coco-mini: images (label = file name) and their captions, ``captions[i]`` belonging to ``images[i]``."""

    images: ImageSet
    captions: list[list[str]]


def coco_mini(size: int, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """coco-mini photos with their human captions. Evaluation only."""
    folder = data_root(root) / "coco-mini"
    table = json.loads((folder / "captions.json").read_text(encoding="utf-8"))

    def build() -> ImageSet:
        files = [folder / "images" / name for name in sorted(table)]
        return decode_files(files, [p.name for p in files], size)

    images = cached("coco-mini", folder / "images", size, build, cache)
    return CaptionedImages(images, [list(table[name]) for name in images.labels])


def class_names(root: str | os.PathLike | None = None) -> tuple[list[dict], list[dict]]:
    """``(imagenet classes, tiny-imagenet classes)``: lists of ``{"wnid", "name"[, "index"]}``."""
    base = data_root(root)
    imagenet = json.loads((base / "breeds" / "imagenet-classes.json").read_text(encoding="utf-8"))
    tiny = json.loads((base / "tiny-imagenet" / "classes.json").read_text(encoding="utf-8"))
    return imagenet, tiny
