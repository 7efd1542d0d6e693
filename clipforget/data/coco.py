"""coco-mini: 159 COCO photos with five human captions each (evaluation only: caption -> image retrieval)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from clipforget.core.paths import data_root, existing

from .cache import cached_imageset
from .images import ImageSet, read_images


@dataclass
class CaptionedImages:
    """Images (labelled by file name) and their captions: ``captions[i]`` describe ``images.images[i]``."""

    images: ImageSet
    captions: list[list[str]]


def coco_mini(size: int, root: str | os.PathLike | None = None, cache: Path | None = None) -> CaptionedImages:
    """The photos (decoded once, cached in ``cache``, default ``<cache>/datasets``) with their captions."""
    folder = data_root(root) / "coco-mini"
    table = json.loads(existing(folder / "captions.json", "coco-mini captions").read_text(encoding="utf-8"))

    def build() -> ImageSet:
        files = [folder / "images" / name for name in sorted(table)]
        return read_images(files, size, [p.name for p in files])

    images = cached_imageset("coco-mini", folder / "images", size, build, cache)
    return CaptionedImages(images, [list(table[name]) for name in images.labels])
