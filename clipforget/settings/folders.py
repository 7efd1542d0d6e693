"""Any folders: forget the images of one folder under a coarse label, keep another folder's (labels: sub-folders)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforget.core.errors import DataError
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.data.images import DEFAULT_MAX_PIXELS, ImageSet, read_folder
from clipforget.data.reference import reference_images
from clipforget.data.task import EvalSet, UnlearningTask

from .registry import Setting, register_setting


@dataclass
class FolderSizes:
    holdout: float = 0.2  # share of each folder held out for calibration and evaluation (without calibration_dir)
    cifar_eval_per_class: int = 0  # CIFAR-10 test images per class added as a kept evaluation set (0: none)
    # unlabelled training images of what else the model must keep knowing, where the data root has them
    # (Tiny-ImageNet train per class, CIFAR-10 train per class; 0: none): distillation targets and the negatives
    # forget texts are mined against (decisions D10, D13)
    reference_tiny_per_class: int = 2
    reference_cifar_per_class: int = 10


def folder_task(
    image_size: int, seed: int = 0, sizes: FolderSizes | None = None, forget_dir: str | os.PathLike | None = None,
    retain_dir: str | os.PathLike | None = None, label: str = "", classnames: list[str] | None = None,
    retain_label: str | None = None, calibration_dir: str | os.PathLike | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS, root: str | os.PathLike | None = None,
    prior_skipped: list[tuple[str, str]] | None = None, forget_prompts: list[str] | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Generic task from folders: forget images all carry ``label``; retain images carry ``retain_label`` if given
    (e.g. the same coarse label, for subgroup forgetting) or their sub-folder names.

    Without ``calibration_dir`` (an ImageFolder whose ``forget/`` and ``retain/`` sub-folders are read like the
    inputs), ``sizes.holdout`` of each set is held out for calibration and evaluation and never trained on. Where
    the data root has CIFAR-10, ``sizes.cifar_eval_per_class`` test images per class are added as a kept set (does
    the model still know what it was not asked to forget?). ``prior_skipped`` lists files dropped before the
    folders were read (e.g. by upload limits); they are reported with the files skipped here. ``forget_prompts``:
    texts the forget images must stop matching besides their label (the method also finds some itself, D13).
    """
    sizes = sizes or FolderSizes()
    if forget_dir is None or retain_dir is None:
        raise DataError("the folders setting needs a forget folder and a retain folder")
    if not label or not label.strip():
        raise DataError("a label text is required: the coarse label the forget images should lose (e.g. 'monkey')")
    label = label.strip()
    forget = read_folder(forget_dir, image_size, label, max_pixels)
    retain = read_folder(retain_dir, image_size, retain_label, max_pixels)
    if len(forget) == 0:
        raise DataError(f"no readable images in the forget gallery ({len(forget.skipped)} files skipped)")
    if len(retain) == 0:
        raise DataError(f"no readable images in the retain gallery ({len(retain.skipped)} files skipped)")
    names = list(dict.fromkeys([label, *retain.labels, *(classnames or [])]))
    if len(names) < 2:
        names.append("object")  # one-class vocabularies cannot be classified zero-shot; a neutral competitor
    if calibration_dir:
        cal_forget = read_folder(Path(calibration_dir) / "forget", image_size, label, max_pixels)
        cal_retain = read_folder(Path(calibration_dir) / "retain", image_size, retain_label, max_pixels)
    else:
        forget, cal_forget = _split(forget, sizes.holdout, seed)
        retain, cal_retain = _split(retain, sizes.holdout, seed)
    skipped = [*(tuple(x) for x in prior_skipped or ()), *forget.skipped], retain.skipped
    try:
        reference = reference_images(image_size, sizes.reference_tiny_per_class, sizes.reference_cifar_per_class,
                                     seed, root)
    except (DataError, OSError):  # a data root without them: no reference images
        reference = None
    prompts = tuple(dict.fromkeys(p.strip() for p in forget_prompts or () if p and p.strip()))
    task = UnlearningTask(forget, retain, names, cal_forget, cal_retain, name=f"folders-{label}",
                          forget_prompts=prompts, reference=reference)
    task.forget.skipped, task.retain.skipped = skipped
    eval_sets = [
        EvalSet("forget_heldout", cal_forget, names, "target"),
        EvalSet("retain_heldout", cal_retain, names, "retain"),
    ]
    if sizes.cifar_eval_per_class:
        try:
            test = cifar10("test", image_size, None, sizes.cifar_eval_per_class, 0, root)
            eval_sets.append(EvalSet("cifar10_test", test, list(CIFAR10_CLASSES), "retain"))
        except DataError:
            pass  # no CIFAR-10 on this machine: the held-out sets only
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


SIZES = {
    "quick": FolderSizes(cifar_eval_per_class=2, reference_tiny_per_class=1, reference_cifar_per_class=5),
    "small": FolderSizes(cifar_eval_per_class=20),
    "paper": FolderSizes(cifar_eval_per_class=0),
}

SETTING = register_setting(Setting(
    "folders", "Your folders: forget one gallery's images under a coarse label, keep another gallery's",
    folder_task, SIZES,
))
