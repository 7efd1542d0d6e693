"""The paper's settings as task builders: each returns an :class:`UnlearningTask` and its evaluation sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data
from .data import CIFAR10_CLASSES, IMAGENET_TO_CIFAR10, DataError, ImageSet
from .pipeline import EvalSet
from .task import UnlearningTask


@dataclass
class Cifar10Sizes:
    forget: int = 500  # train images of the class to forget
    retain_per_class: int = 100  # train images of each other class
    calibration_forget: int = 100  # held-out train images, never trained on by the unlearning
    calibration_retain_per_class: int = 30
    eval_per_class: int | None = None  # test images per class (None: all 1,000)


def cifar10_class_task(
    forget_class: str, image_size: int, seed: int = 0, sizes: Cifar10Sizes | None = None,
    root: str | os.PathLike | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Out-of-domain setting (paper Tab. 2): forget CIFAR-10 ``forget_class``, keep the other nine and ImageNet."""
    if forget_class not in CIFAR10_CLASSES:
        raise DataError(f"unknown CIFAR-10 class {forget_class!r}; choose from {', '.join(CIFAR10_CLASSES)}")
    sizes = sizes or Cifar10Sizes()
    others = tuple(c for c in CIFAR10_CLASSES if c != forget_class)
    classes = list(CIFAR10_CLASSES)
    forget = data.cifar10("train", image_size, (forget_class,), sizes.forget, 0, root, seed)
    retain = data.cifar10("train", image_size, others, sizes.retain_per_class, 0, root, seed)
    cal_forget = data.cifar10("train", image_size, (forget_class,), sizes.calibration_forget, sizes.forget, root, seed)
    cal_retain = data.cifar10(
        "train", image_size, others, sizes.calibration_retain_per_class, sizes.retain_per_class, root, seed
    )
    task = UnlearningTask(forget, retain, classes, cal_forget, cal_retain, name=f"cifar10-{forget_class}")
    test_target = data.cifar10("test", image_size, (forget_class,), sizes.eval_per_class, 0, root)
    test_retain = data.cifar10("test", image_size, others, sizes.eval_per_class, 0, root)
    imagenet = data.imagenet_samples(image_size, IMAGENET_TO_CIFAR10, root)
    imagenet_target = imagenet.where([x == forget_class for x in imagenet.labels])
    eval_sets = [
        EvalSet("cifar10_target", test_target, classes, "target"),
        EvalSet("cifar10_retain", test_retain, classes, "retain"),
        EvalSet("imagenet_target", imagenet_target, classes, "retain"),
        EvalSet("imagenet_all", imagenet, classes, "retain"),
    ]
    return task, eval_sets


def folder_task(
    forget_dir: str | os.PathLike,
    retain_dir: str | os.PathLike,
    label: str,
    image_size: int,
    classnames: list[str] | None = None,
    retain_label: str | None = None,
    calibration_dir: str | os.PathLike | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    max_pixels: int = data.DEFAULT_MAX_PIXELS,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Generic task from folders: forget images all carry ``label``; retain images carry ``retain_label`` if given
    (e.g. the same coarse label, for subgroup forgetting) or their sub-folder names.

    Without ``calibration_dir`` (an ImageFolder whose ``forget/`` and ``retain/`` sub-folders are read like the
    inputs), ``holdout`` of each set is held out for calibration and evaluation and never trained on.
    """
    if not label or not label.strip():
        raise DataError("a label text is required: the coarse label the forget images should lose (e.g. 'monkey')")
    label = label.strip()
    forget = data.read_folder(forget_dir, image_size, label, max_pixels)
    retain = data.read_folder(retain_dir, image_size, retain_label, max_pixels)
    if len(forget) == 0:
        raise DataError(f"no readable images in the forget gallery {forget_dir} ({len(forget.skipped)} skipped)")
    if len(retain) == 0:
        raise DataError(f"no readable images in the retain gallery {retain_dir} ({len(retain.skipped)} skipped)")
    names = list(dict.fromkeys([label, *retain.labels, *(classnames or [])]))
    if len(names) < 2:
        names.append("object")  # one-class vocabularies cannot be classified zero-shot; a neutral competitor
    if calibration_dir:
        cal_forget = data.read_folder(Path(calibration_dir) / "forget", image_size, label, max_pixels)
        cal_retain = data.read_folder(Path(calibration_dir) / "retain", image_size, retain_label, max_pixels)
    else:
        forget, cal_forget = _split(forget, holdout, seed)
        retain, cal_retain = _split(retain, holdout, seed)
    skipped = forget.skipped, retain.skipped
    task = UnlearningTask(forget, retain, names, cal_forget, cal_retain, name=f"folders-{label}")
    task.forget.skipped, task.retain.skipped = skipped
    eval_sets = [
        EvalSet("forget_heldout", cal_forget, names, "target"),
        EvalSet("retain_heldout", cal_retain, names, "retain"),
    ]
    return task, eval_sets


def _split(images: ImageSet, holdout: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split off ``holdout`` of the images (at least one, when there are two or more)."""
    n = len(images)
    n_hold = round(n * holdout) if n > 1 else 0
    n_hold = min(max(n_hold, 1 if n > 1 and holdout > 0 else 0), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    train, hold = images.subset(order[n_hold:]), images.subset(order[:n_hold])
    train.skipped = images.skipped
    return train, hold
