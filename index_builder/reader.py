"""Reader: gallery folders -> batches of uint8 images at the model's input size (torch DataLoader workers decode).

Labels (the ``label`` column of the metadata):

* a file inside a sub-folder gets the name of its *first* folder under the gallery root
  (``cifar10/test/airplane/0001.jpg`` with gallery ``cifar10/test`` -> ``airplane``); a folder named by a WordNet id
  (Tiny-ImageNet's ``val/n02509815/``) gets that ImageNet class's display name (``lesser panda``) when the data
  root has the ImageNet class list;
* a file directly in the gallery root named like the ImageNet samples, ``<wnid>_<name>.<ext>``
  (``n02690373_airliner.JPEG``), gets the ImageNet class name from the file name (``airliner``);
* any other file directly in the root gets the gallery folder's own name, or its parent's when the folder is called
  ``images`` (``coco-mini/images/x.jpg`` -> ``coco-mini``).

Decoding is :func:`clipforget.data.open_image` + :func:`clipforget.data.to_model_size`, the same pixels the rest of
clipforget sees. Files that are not images or do not decode are skipped with a reason, never fatal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from clipforget.core.errors import DataError
from clipforget.data.imagenet import display_name
from clipforget.data.images import IMAGE_SUFFIXES, list_image_files, open_image, to_model_size

IMAGENET_FILE = re.compile(r"^n\d{8}_(.+)$")
WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class GalleryFile:
    """One file to index: its path, label and the gallery root it was found under."""

    path: str
    label: str
    gallery: str

    def record(self) -> dict[str, str]:
        return {"path": self.path, "label": self.label, "gallery": self.gallery}

    @classmethod
    def from_record(cls, record: dict[str, str]) -> GalleryFile:
        """The inverse of :meth:`record` (a row of an index's ``metadata.jsonl``)."""
        return cls(record["path"], record.get("label", ""), record.get("gallery", ""))


def file_label(path: Path, root: Path) -> str:
    """The label rule of the module docstring."""
    parts = path.relative_to(root).parts
    if len(parts) > 1:
        if WNID.fullmatch(parts[0]):
            try:
                return display_name(parts[0])
            except DataError:
                return parts[0]
        return parts[0]
    match = IMAGENET_FILE.match(path.stem)
    if match:
        return match.group(1)
    return root.parent.name if root.name == "images" else root.name


def list_gallery(galleries: Sequence[str | os.PathLike]) -> tuple[list[GalleryFile], list[tuple[str, str]]]:
    """All files of the galleries in a fixed order (gallery order, then sorted paths), and non-image files skipped."""
    files: list[GalleryFile] = []
    skipped: list[tuple[str, str]] = []
    for gallery in galleries:
        root = Path(gallery).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"gallery folder not found: {root}")
        for path in list_image_files(root):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((str(path), "not an image file type"))
                continue
            files.append(GalleryFile(str(path), file_label(path, root), str(root)))
    return files, skipped


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0-based ``i``) -> ``(i, n)``; ``None`` -> ``(0, 1)``."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_files(files: Sequence[GalleryFile], shard: tuple[int, int]) -> list[GalleryFile]:
    """Shard ``i`` of ``n``: a contiguous slice, so merging shards 0..n-1 in order gives the unsharded order."""
    i, n = shard
    return list(files[i * len(files) // n : (i + 1) * len(files) // n])


def decode(path: str, image_size: int) -> tuple[torch.Tensor | None, str | None]:
    """One file at model size, or ``None`` and the reason it could not be read (a bad file is never fatal)."""
    try:
        return to_model_size(open_image(path), image_size), None
    except DataError as err:
        return None, str(err)
    except OSError as err:  # vanished / unreadable file
        return None, f"cannot read file ({type(err).__name__})"


class ImageFileDataset(Dataset):
    """``dataset[i] -> (i, uint8 3,S,S tensor or None, reason or None)``; decoding errors become reasons."""

    def __init__(self, files: Sequence[GalleryFile], image_size: int):
        self.files = list(files)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        return i, *decode(self.files[i].path, self.image_size)


@dataclass
class Batch:
    """Decoded images with their positions in the reader's file list, and the files that failed."""

    positions: list[int]
    images: torch.Tensor  # uint8 B,3,S,S
    failed: list[tuple[int, str]] = field(default_factory=list)


def collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> Batch:
    good = [(i, img) for i, img, _ in items if img is not None]
    failed = [(i, reason) for i, img, reason in items if img is None]
    images = torch.stack([img for _, img in good]) if good else torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    return Batch([i for i, _ in good], images, failed)


class FolderReader:
    """Iterates :class:`Batch` es of ``files`` in order, decoded by ``workers`` DataLoader processes."""

    def __init__(self, files: Sequence[GalleryFile], image_size: int, batch_size: int = 256,
                 workers: int | None = None):
        self.files = list(files)
        self.dataset = ImageFileDataset(self.files, image_size)
        self.batch_size = batch_size
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers

    def __iter__(self) -> Iterator[Batch]:
        if not self.files:
            return iter(())
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                            collate_fn=collate, pin_memory=torch.cuda.is_available(),
                            prefetch_factor=4 if self.workers else None)
        return iter(loader)
