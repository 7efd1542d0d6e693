"""Images at the model's input size: :class:`ImageSet`, decoding with limits, and reading folders (or zips of them).

Every reader returns an :class:`ImageSet`: uint8 images already at the model's input size (resize of the shorter
side, bicubic, then a centre crop -- open_clip's eval transform), one text label per image, the source paths, and the
files it skipped with the reason. Bad files never stop a read; they are counted and reported.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

from clipforget.core.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 40_000_000  # larger images are skipped with a reason (decompression-bomb guard)


@dataclass
class ImageSet:
    """Images (uint8 ``N,3,S,S``), one label each, their source paths and the skipped files."""

    images: torch.Tensor
    labels: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray | list[int] | range | torch.Tensor) -> ImageSet:
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageSet(self.images[idx], [self.labels[i] for i in idx.tolist()], [self.paths[i] for i in idx.tolist()])

    def where(self, keep: list[bool]) -> ImageSet:
        return self.subset([i for i, k in enumerate(keep) if k])

    def relabel(self, label: str | dict[str, str]) -> ImageSet:
        labels = [label] * len(self) if isinstance(label, str) else [label.get(x, x) for x in self.labels]
        return ImageSet(self.images, labels, self.paths, self.skipped)

    def per_class(self, n: int | None, seed: int = 0) -> ImageSet:
        """At most ``n`` images of each label, drawn with ``seed`` (file order kept); ``None``: all."""
        return self if n is None else self.subset(per_class_indices(self.labels, n, seed))

    def label_counts(self) -> dict[str, int]:
        return dict(Counter(self.labels))

    @staticmethod
    def concat(sets: list[ImageSet]) -> ImageSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            raise DataError("no images to concatenate")
        return ImageSet(torch.cat([s.images for s in sets]), [x for s in sets for x in s.labels],
                        [x for s in sets for x in s.paths], [x for s in sets for x in s.skipped])


def per_class_indices(labels: list[str], n: int, seed: int = 0) -> list[int]:
    """Sorted indices of at most ``n`` items per label, drawn with ``seed`` (labels in order of first appearance)."""
    rng = np.random.default_rng(seed)
    array = np.asarray(labels)
    keep: list[int] = []
    for name in dict.fromkeys(labels):
        ids = np.flatnonzero(array == name)
        keep += ids[rng.permutation(len(ids))[:n]].tolist()
    return sorted(keep)


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
        raise DataError(f"folder not found: {root.name}")
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts))


def read_images(files: list[Path], size: int, labels: list[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSet:
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


def read_folder(root: str | os.PathLike, size: int, label: str | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSet:
    """Read a gallery folder (or a .zip of one, unpacked once into the cache). Labels: ``label`` for every file if
    given, else each file's first sub-folder (the folder's own name for files directly in ``root``)."""
    root = Path(root)
    skipped: list[tuple[str, str]] = []
    if root.suffix.lower() == ".zip" and root.is_file():
        from .archives import unpack_to_cache

        root, skipped = unpack_to_cache(root)
    files = list_image_files(root)
    if label is None:
        labels = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else root.name for p in files]
    else:
        labels = [label] * len(files)
    images = read_images(files, size, labels, max_pixels)
    images.skipped = skipped + images.skipped
    return images


def arrays_to_imageset(images: np.ndarray, labels: list[str], size: int, paths: list[str] | None = None) -> ImageSet:
    """HWC uint8 arrays -> :class:`ImageSet` at model size (same PIL path as files)."""
    tensors = [to_model_size(Image.fromarray(img), size) for img in images]
    out = torch.stack(tensors) if tensors else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return ImageSet(out, list(labels), paths or [f"array:{i}" for i in range(len(labels))])
