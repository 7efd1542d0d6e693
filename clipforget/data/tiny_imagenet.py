"""Tiny-ImageNet (202 ImageNet classes, 64 px): train images read straight from ``train.zip``, val from folders.

Labels are the classes' display names (:func:`clipforget.data.imagenet.display_name` by WordNet id), so a Tiny-ImageNet
image and an ImageNet sample of the same class carry the same label. ``val`` is evaluation only.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import torch
from PIL import Image

from clipforget.core.errors import DataError
from clipforget.core.paths import data_root, existing

from .cache import cached_imageset
from .imagenet import display_name
from .images import IMAGE_SUFFIXES, ImageSet, list_image_files, per_class_indices, read_images, to_model_size


def tiny_imagenet_classes(root: str | os.PathLike | None = None) -> list[dict]:
    """The 202 classes: ``wnid``, ``name`` (WordNet synonyms, comma separated)."""
    path = existing(data_root(root) / "tiny-imagenet" / "classes.json", "Tiny-ImageNet class list")
    return json.loads(path.read_text(encoding="utf-8"))


def tiny_imagenet_names(root: str | os.PathLike | None = None) -> list[str]:
    """Display names of the 202 classes, in the class list's order."""
    return [display_name(c["wnid"], root) for c in tiny_imagenet_classes(root)]


def tiny_imagenet(split: str, size: int, root: str | os.PathLike | None = None) -> ImageSet:
    """All images of ``split`` (``train``: 150 per class from the zip; ``val``: 50 per class), labelled by name."""
    base = data_root(root) / "tiny-imagenet"
    if split == "val":
        folder = existing(base / "val", "Tiny-ImageNet val folder", folder=True)

        def build_val() -> ImageSet:
            files = [p for p in list_image_files(folder) if len(p.relative_to(folder).parts) == 2]
            return read_images(files, size, [display_name(p.parent.name, root) for p in files])

        return cached_imageset("tiny-imagenet-val", folder, size, build_val)
    if split != "train":
        raise DataError(f"Tiny-ImageNet split must be train or val, not {split!r}")
    archive = existing(base / "train.zip", "Tiny-ImageNet train archive")
    return cached_imageset("tiny-imagenet-train", archive, size, lambda: _read_zip(archive, size, root))


def tiny_imagenet_train_sample(size: int, per_class: int, seed: int = 0,
                               root: str | os.PathLike | None = None) -> ImageSet:
    """``tiny_imagenet("train", size).per_class(per_class, seed)`` without decoding the other ~30k images."""
    archive = existing(data_root(root) / "tiny-imagenet" / "train.zip", "Tiny-ImageNet train archive")
    with zipfile.ZipFile(archive) as zf:
        members, _ = _image_members(zf, archive)
        labels = [display_name(Path(info.filename).parts[0], root) for info in members]
        chosen = per_class_indices(labels, per_class, seed)
        images = _decode(zf, archive, [members[i] for i in chosen], size, root)
    if len(images) != len(chosen):
        raise DataError(f"{archive}: {len(chosen) - len(images)} chosen members could not be read")
    return images


def _image_members(zf: zipfile.ZipFile, archive: Path) -> tuple[list[zipfile.ZipInfo], list[tuple[str, str]]]:
    """The ``<wnid>/<image>`` members in file-name order, and the skipped ones with their reason."""
    members, skipped = [], []
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        parts = Path(info.filename).parts
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if len(parts) != 2 or Path(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((f"{archive.name}/{info.filename}", "not a <wnid>/<image> member"))
            continue
        members.append(info)
    return members, skipped


def _decode(zf: zipfile.ZipFile, archive: Path, members: list[zipfile.ZipInfo], size: int,
            root: str | os.PathLike | None) -> ImageSet:
    tensors, labels, paths, skipped = [], [], [], []
    for info in members:
        try:
            with Image.open(io.BytesIO(zf.read(info))) as img:
                img.load()
                tensors.append(to_model_size(img.convert("RGB"), size))
        except Exception as err:  # a bad member is skipped with its reason, never fatal
            skipped.append((f"{archive.name}/{info.filename}", f"not a readable image ({type(err).__name__})"))
            continue
        labels.append(display_name(Path(info.filename).parts[0], root))
        paths.append(f"tiny-imagenet/train/{info.filename}")
    images = torch.stack(tensors) if tensors else torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return ImageSet(images, labels, paths, skipped)


def _read_zip(archive: Path, size: int, root: str | os.PathLike | None) -> ImageSet:
    with zipfile.ZipFile(archive) as zf:
        members, skipped = _image_members(zf, archive)
        images = _decode(zf, archive, members, size, root)
    images.skipped = skipped + images.skipped
    return images
