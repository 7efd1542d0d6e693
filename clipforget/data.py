"""Readers: image folders, CIFAR-10 (cached as arrays), ImageNet samples and BREEDS. No copies of the data.

Every reader returns an :class:`ImageSet`: uint8 images already at the model's input size (resize of the shorter
side, bicubic, then a centre crop -- open_clip's eval transform), one text label per image, the source paths, and the
files it skipped with the reason. Bad files never stop a read; they are counted and reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

from .paths import cache_dir, data_root

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VEHICLES = frozenset({"airplane", "automobile", "ship", "truck"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 40_000_000  # larger images are skipped with a reason (decompression-bomb guard)

# ImageNet-1k classes that show a CIFAR-10 class (by ImageNet index). ImageNet has no deer: the three antelopes
# stand in for it. "wing" photos show aircraft wings; submarine and the non-truck vans are left out on purpose.
IMAGENET_TO_CIFAR10: dict[str, tuple[int, ...]] = {
    "airplane": (404, 895, 908),
    "automobile": (436, 468, 511, 609, 627, 656, 661, 751, 817),
    "bird": tuple(range(7, 25)) + tuple(range(80, 101)) + tuple(range(127, 147)),
    "cat": (281, 282, 283, 284, 285),
    "deer": (351, 352, 353),
    "dog": tuple(range(151, 269)),
    "frog": (30, 31, 32),
    "horse": (339,),
    "ship": (403, 484, 510, 554, 625, 628, 724, 780, 814, 871, 914),
    "truck": (555, 569, 675, 717, 734, 803, 864, 867),
}


class DataError(ValueError):
    """Input data is missing or unusable; the message says what and where."""


@dataclass
class ImageSet:
    """Images (uint8 ``N,3,S,S``), one label each, their source paths and the skipped files."""

    images: torch.Tensor
    labels: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray | list[int] | torch.Tensor) -> ImageSet:
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageSet(
            self.images[idx], [self.labels[i] for i in idx.tolist()], [self.paths[i] for i in idx.tolist()], []
        )

    def where(self, keep: list[bool]) -> ImageSet:
        return self.subset([i for i, k in enumerate(keep) if k])

    def relabel(self, label: str | dict[str, str]) -> ImageSet:
        labels = [label] * len(self) if isinstance(label, str) else [label.get(x, x) for x in self.labels]
        return ImageSet(self.images, labels, self.paths, self.skipped)

    def label_counts(self) -> dict[str, int]:
        return dict(Counter(self.labels))

    @staticmethod
    def concat(sets: list[ImageSet]) -> ImageSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            raise DataError("no images to concatenate")
        return ImageSet(
            torch.cat([s.images for s in sets]),
            [x for s in sets for x in s.labels],
            [x for s in sets for x in s.paths],
            [x for s in sets for x in s.skipped],
        )


def to_model_size(image: Image.Image, size: int) -> torch.Tensor:
    """PIL image -> uint8 ``3,size,size``: shorter side to ``size`` (bicubic), centre crop."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def open_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode one image; raises :class:`DataError` with a short reason when it cannot."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise DataError(f"too large ({img.width}x{img.height} > {max_pixels} pixels)")
                img.load()
                return img.convert("RGB")
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"too large (over {max_pixels} pixels)") from None
    except Exception as err:
        raise DataError(f"not a readable image ({type(err).__name__})") from None


def list_image_files(root: str | os.PathLike) -> list[Path]:
    """All files under ``root`` (sorted, hidden ones left out); suffixes are checked when reading."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts)
    )


def read_images(
    files: list[Path],
    size: int,
    labels: list[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageSet:
    """Decode ``files`` to model size; unreadable, non-image or oversized files are skipped with a reason."""
    tensors, kept_labels, paths, skipped = [], [], [], []
    for path, label in zip(files, labels, strict=True):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(path), "not an image file type"))
            continue
        try:
            tensors.append(to_model_size(open_image(path, max_pixels), size))
        except DataError as err:
            skipped.append((str(path), str(err)))
            continue
        kept_labels.append(label)
        paths.append(str(path))
    images = torch.stack(tensors) if tensors else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return ImageSet(images, kept_labels, paths, skipped)


def read_folder(
    root: str | os.PathLike,
    size: int,
    label: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageSet:
    """Read a gallery folder (or a .zip of one). Labels: ``label`` if given, else each file's first sub-folder.

    Files directly in ``root`` with no ``label`` get the folder's own name as label.
    """
    root = Path(root)
    if root.suffix.lower() == ".zip" and root.is_file():
        root = extract_zip(root)
    files = list_image_files(root)
    if label is not None:
        labels = [label] * len(files)
    else:
        labels = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else root.name for p in files]
    return read_images(files, size, labels, max_pixels)


def extract_zip(archive: Path, max_total_bytes: int = 2_000_000_000) -> Path:
    """Extract a zip once into the cache (by content hash); refuses path traversal and zip bombs."""
    digest = hashlib.sha1(archive.read_bytes()).hexdigest()[:16]
    target = cache_dir() / "uploads" / f"{archive.stem}-{digest}"
    if target.is_dir():
        return target
    try:
        with zipfile.ZipFile(archive) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if total > max_total_bytes:
                raise DataError(f"{archive.name}: unpacks to {total} bytes, over the {max_total_bytes} limit")
            tmp = target.with_name(target.name + ".partial")
            for info in zf.infolist():
                dest = (tmp / info.filename).resolve()
                if not str(dest).startswith(str(tmp.resolve())):
                    raise DataError(f"{archive.name}: unsafe path {info.filename!r} in archive")
            zf.extractall(tmp)
            os.replace(tmp, target)
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive.name}: not a valid zip file") from err
    return target


# --- CIFAR-10 -------------------------------------------------------------------------------------------------


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
    from .atomic import write_atomic

    write_atomic(cached, lambda tmp: np.savez(open(tmp, "wb"), images=arrays[0], labels=arrays[1]))
    return arrays


def _download_cifar10(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(cache_dir() / "torchvision"), train=split == "train", download=True)
    except Exception as err:
        raise DataError(
            f"CIFAR-10 not found under the data root ({data_root()}) and could not be downloaded: {err}. "
            "Point --data-root / CLIPFORGET_DATA at a folder holding cifar10/{train,test}/<class>/*.jpg"
        ) from err
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def arrays_to_imageset(
    images: np.ndarray, labels: list[str], size: int, paths: list[str] | None = None
) -> ImageSet:
    """HWC uint8 arrays -> :class:`ImageSet` at model size (same PIL path as files)."""
    tensors = [to_model_size(Image.fromarray(img), size) for img in images]
    out = torch.stack(tensors) if tensors else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return ImageSet(out, list(labels), paths or [f"array:{i}" for i in range(len(labels))])


def cifar10(
    split: str,
    size: int,
    classes: tuple[str, ...] | None = None,
    per_class: int | None = None,
    offset: int = 0,
    root: str | os.PathLike | None = None,
    seed: int | None = None,
) -> ImageSet:
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


# --- ImageNet samples and BREEDS --------------------------------------------------------------------------------


def imagenet_classes(root: str | os.PathLike | None = None) -> list[dict]:
    path = data_root(root) / "breeds" / "imagenet-classes.json"
    if not path.is_file():
        raise DataError(f"ImageNet class list not found: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def living17(root: str | os.PathLike | None = None) -> dict[str, list[dict]]:
    path = data_root(root) / "breeds" / "living17.json"
    if not path.is_file():
        raise DataError(f"BREEDS LIVING-17 split not found: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def imagenet_samples(
    size: int, indices: dict[str, tuple[int, ...]] | None = None, root: str | os.PathLike | None = None
) -> ImageSet:
    """The ImageNet sample images whose class index is listed, labelled by the dict key (default: CIFAR mapping)."""
    indices = indices or IMAGENET_TO_CIFAR10
    folder = data_root(root) / "imagenet-samples"
    if not folder.is_dir():
        raise DataError(f"ImageNet samples folder not found: {folder}")
    by_wnid = {p.name.split("_", 1)[0]: p for p in folder.iterdir()}
    classes = imagenet_classes(root)
    files, labels = [], []
    for label, ids in indices.items():
        for i in ids:
            path = by_wnid.get(classes[i]["wnid"])
            if path is not None:
                files.append(path)
                labels.append(label)
    return read_images(files, size, labels)
