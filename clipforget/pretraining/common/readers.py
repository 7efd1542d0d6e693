"""Readers of the embedded recipe's data, decoded once at model size and cached as ``.npz`` (``<cache>/readers``, keyed
as :func:`clipforget.data.cache.cached_imageset` keys them).

They differ from ``clipforget.data``'s readers on purpose: labels are wnids / species folder names (not display
names). Every reader returns a :class:`clipforget.data.images.ImageSet` at model size; bad files are skipped with
their reason, never fatal.

Sources (under the data root, read in place, never copied):

* Tiny-ImageNet val: ``tiny-imagenet/val/<wnid>/*.JPEG``; label = wnid.
* monkeys10 train / val: ``monkeys10/<split>/<species>/*``; label = species folder name. Warts kept on purpose in the
  data (``train/nilgiri_langur/n9160.png`` is read; ``n9151jpg`` has no suffix and is skipped with the reason
  "not an image file type", like every clipforget reader).
* CIFAR-10 train / test: ``clipforget.data.cifar10``'s decoded arrays, resized to ``S`` with the same PIL path;
  label = class name.
* ImageNet samples: ``imagenet-samples/<wnid>_<name>.JPEG``; label = wnid (evaluation only).
* coco-mini: ``coco-mini/images/*.jpg`` with ``captions.json``; label = file name (evaluation only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from clipforget.core import paths
from clipforget.core.errors import DataError
from clipforget.data import coco as data_coco
from clipforget.data.cache import cached_imageset
from clipforget.data.cifar10 import CIFAR10_CLASSES, load_cifar10_arrays
from clipforget.data.images import ImageSet, arrays_to_imageset, list_image_files, read_images


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else clipforget's data root (``$CLIPFORGET_DATA``, ...); raises when it is not a folder."""
    path = paths.data_root(root)
    if not path.is_dir():
        raise DataError(f"data root not found: {path}")
    return path


# --- cache ------------------------------------------------------------------------------------------------------


def cached(reader: str, source: Path, size: int, build: Callable[[], ImageSet],
           cache: str | os.PathLike | None = None) -> ImageSet:
    """``build()`` once per (reader, source, size); later calls load the ``.npz`` (in ``cache``, else
    ``<cache>/readers``)."""
    return cached_imageset(reader, source, size, build, Path(cache) if cache else paths.cache_dir() / "readers")


def _folder_by_class(root: Path, size: int) -> ImageSet:
    """``root/<label>/<file>`` -> images labelled by their sub-folder."""
    files = [p for p in list_image_files(root) if len(p.relative_to(root).parts) == 2]
    return read_images(files, size, [p.parent.name for p in files])


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
        names = [CIFAR10_CLASSES[i] for i in ids.tolist()]
        return arrays_to_imageset(arrays, names, size, [f"cifar10/{split}/{n}/{i:05d}" for i, n in enumerate(names)])

    return cached(f"cifar10-{split}", folder, size, build, cache)


def imagenet_samples(size: int, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """The 1,000 ImageNet sample images; label = wnid. Evaluation only."""
    folder = data_root(root) / "imagenet-samples"

    def build() -> ImageSet:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return read_images(files, size, [p.name.split("_", 1)[0] for p in files])

    return cached("imagenet-samples", folder, size, build, cache)


def coco_mini(size: int, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """coco-mini photos with their human captions (``clipforget.data.coco``'s reader). Evaluation only."""
    return data_coco.coco_mini(size, data_root(root), Path(cache) if cache else paths.cache_dir() / "readers")


def class_names(root: str | os.PathLike | None = None) -> tuple[list[dict], list[dict]]:
    """``(imagenet classes, tiny-imagenet classes)``: lists of ``{"wnid", "name"[, "index"]}``."""
    base = data_root(root)
    imagenet = json.loads((base / "breeds" / "imagenet-classes.json").read_text(encoding="utf-8"))
    tiny = json.loads((base / "tiny-imagenet" / "classes.json").read_text(encoding="utf-8"))
    return imagenet, tiny
