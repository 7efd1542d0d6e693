"""Reference images: training images of the datasets a run must keep knowing, without labels (distillation only)."""

from __future__ import annotations

import os

from .cifar10 import cifar10
from .images import ImageSet
from .tiny_imagenet import tiny_imagenet_train_sample


def reference_images(image_size: int, tiny_per_class: int, cifar_per_class: int, seed: int,
                     root: str | os.PathLike | None = None) -> ImageSet | None:
    """Training images of the other retained sets (Tiny-ImageNet train, CIFAR-10 train), or None when both are 0."""
    sets = []
    if tiny_per_class:
        sets.append(tiny_imagenet_train_sample(image_size, tiny_per_class, seed, root))
    if cifar_per_class:
        sets.append(cifar10("train", image_size, None, cifar_per_class, 0, root, seed))
    return ImageSet.concat(sets) if sets else None
