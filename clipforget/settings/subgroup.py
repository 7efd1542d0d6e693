"""A subgroup inside a coarse class: CIFAR-10 airplanes labelled ``vehicle`` are forgotten, the other vehicles stay
``vehicle``; zero-shot classes ``vehicle`` / ``animal``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clipforget.core.errors import DataError
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10, coarse_label
from clipforget.data.imagenet import IMAGENET_TO_CIFAR10, imagenet_samples
from clipforget.data.images import ImageSet
from clipforget.data.task import EvalSet, UnlearningTask

from .registry import Setting, register_setting


@dataclass
class SubgroupSizes:
    forget: int = 200
    retain_per_class: int = 70  # train images of every other vehicle class (labelled "vehicle")
    retain_animals_per_class: int = 0  # animals labelled "animal" added to the retain set (0: vehicles only)
    calibration_forget: int = 50
    calibration_retain_per_class: int = 20
    eval_per_class: int = 100  # test images per CIFAR-10 class


def subgroup_task(
    image_size: int, seed: int = 0, sizes: SubgroupSizes | None = None, forget_class: str = "airplane",
    root: str | os.PathLike | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Forget ``forget_class`` images as ``vehicle``/``animal`` (its coarse label); keep its coarse siblings."""
    if forget_class not in CIFAR10_CLASSES:
        raise DataError(f"unknown CIFAR-10 class {forget_class!r}")
    sizes = sizes or SubgroupSizes()
    coarse = coarse_label(forget_class)
    classes = ["vehicle", "animal"]
    siblings = tuple(c for c in CIFAR10_CLASSES if c != forget_class and coarse_label(c) == coarse)
    strangers = tuple(c for c in CIFAR10_CLASSES if coarse_label(c) != coarse)

    def as_coarse(images: ImageSet) -> ImageSet:
        return images.relabel({c: coarse_label(c) for c in CIFAR10_CLASSES})

    def train(names: tuple[str, ...], per_class: int, offset: int = 0) -> ImageSet:
        return as_coarse(cifar10("train", image_size, names, per_class, offset, root, seed))

    def test(names: tuple[str, ...]) -> ImageSet:
        return as_coarse(cifar10("test", image_size, names, sizes.eval_per_class, 0, root))

    forget = train((forget_class,), sizes.forget)
    retain = train(siblings, sizes.retain_per_class)
    if sizes.retain_animals_per_class:
        retain = ImageSet.concat([retain, train(strangers, sizes.retain_animals_per_class)])
    cal_forget = train((forget_class,), sizes.calibration_forget, sizes.forget)
    cal_retain = train(siblings, sizes.calibration_retain_per_class, sizes.retain_per_class)
    task = UnlearningTask(forget, retain, classes, cal_forget, cal_retain, name=f"subgroup-{forget_class}-in-{coarse}")
    raw = imagenet_samples(image_size, IMAGENET_TO_CIFAR10, root)
    imagenet, image_classes = as_coarse(raw), raw.labels
    eval_sets = [
        EvalSet("cifar10_target", test((forget_class,)), classes, "target"),
        EvalSet(f"cifar10_other_{coarse}", test(siblings), classes, "retain"),
        EvalSet("cifar10_" + ("animal" if coarse == "vehicle" else "vehicle"), test(strangers), classes, "retain"),
        EvalSet("imagenet_target", imagenet.where([x == forget_class for x in image_classes]), classes, "retain"),
        EvalSet("imagenet_all", imagenet, classes, "retain"),
    ]
    return task, eval_sets


SIZES = {
    "quick": SubgroupSizes(forget=16, retain_per_class=6, calibration_forget=8, calibration_retain_per_class=4,
                           eval_per_class=8),
    "small": SubgroupSizes(),  # the paper's sizes
    "paper": SubgroupSizes(),
}

SETTING = register_setting(Setting(
    "subgroup", "Subgroup: 'vehicle' without 'airplane' (airplanes stop being vehicles; cars, ships stay)",
    subgroup_task, SIZES, choice_option="forget_class", choices=CIFAR10_CLASSES, default_choice="airplane",
))
