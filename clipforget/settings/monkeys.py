"""The paper's "marmoset in monkey" (Tab. 1) on real photos: forget the two marmoset species of monkeys10 as "monkey",
keep the eight other species as "monkey", and keep knowing Tiny-ImageNet, CIFAR-10 and the ImageNet samples.

The zero-shot vocabulary of the task is BREEDS LIVING-17's seventeen superclasses (monkey, ape, dog, bear, ...), as
in the paper. Training and calibration images come from ``monkeys10/train`` (disjoint slices), evaluation from
``monkeys10/val`` and the other datasets' evaluation splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.data.imagenet import imagenet_all_samples, imagenet_names, living17, short_name
from clipforget.data.images import ImageSet
from clipforget.data.monkeys10 import MARMOSETS, monkeys10
from clipforget.data.reference import reference_images
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.data.tiny_imagenet import tiny_imagenet, tiny_imagenet_names

from .registry import Setting, register_setting

COARSE = "monkey"


@dataclass
class MonkeySizes:
    train_per_species: int | None = 85  # monkeys10 train photos per species for forget / retain (None: all left)
    calibration_per_species: int = 20  # held-out monkeys10 train photos per species (never trained on)
    tiny_eval_per_class: int | None = None  # Tiny-ImageNet val images per class (None: all 50)
    cifar_eval_per_class: int | None = None  # CIFAR-10 test images per class (None: all 1,000)
    imagenet_eval: bool = True  # the 1,000 ImageNet samples, 1000-way
    # unlabelled training images of the other retained sets, distillation only (Tiny-ImageNet train per class,
    # CIFAR-10 train per class; 0: none). decisions D10
    reference_tiny_per_class: int = 3
    reference_cifar_per_class: int = 30


def vocabulary(root: str | os.PathLike | None = None) -> list[str]:
    """LIVING-17's superclass names (``monkey`` among them)."""
    return [short_name(k) for k in living17(root)]


def monkeys_task(image_size: int, seed: int = 0, sizes: MonkeySizes | None = None,
                 root: str | os.PathLike | None = None) -> tuple[UnlearningTask, list[EvalSet]]:
    """Forget pygmy + silvery marmosets as "monkey"; keep the other species, Tiny-ImageNet, CIFAR-10, ImageNet."""
    sizes = sizes or MonkeySizes()
    classes = vocabulary(root)
    train = monkeys10("train", image_size, root)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[ImageSet]] = {"f": [], "r": [], "cf": [], "cr": []}
    labels = np.asarray(train.labels)
    for species in dict.fromkeys(train.labels):
        ids = np.flatnonzero(labels == species)
        ids = ids[rng.permutation(len(ids))]
        cal, rest = ids[: sizes.calibration_per_species], ids[sizes.calibration_per_species:]
        rest = rest[: sizes.train_per_species] if sizes.train_per_species else rest
        marmoset = species in MARMOSETS
        parts["f" if marmoset else "r"].append(train.subset(sorted(rest.tolist())))
        parts["cf" if marmoset else "cr"].append(train.subset(sorted(cal.tolist())))
    forget, retain, cal_forget, cal_retain = (ImageSet.concat(parts[k]).relabel(COARSE) for k in ("f", "r", "cf", "cr"))
    reference = reference_images(image_size, sizes.reference_tiny_per_class, sizes.reference_cifar_per_class, seed,
                                 root)
    task = UnlearningTask(forget, retain, classes, cal_forget, cal_retain, name="monkeys-marmoset_in_monkey",
                          reference=reference)  # the subgroup's own names are mined by the method (D13)
    task.forget.skipped = train.skipped
    val = monkeys10("val", image_size, root)
    is_marmoset = [x in MARMOSETS for x in val.labels]
    eval_sets = [
        EvalSet("marmosets", val.where(is_marmoset).relabel(COARSE), classes, "target"),
        EvalSet("other_monkeys", val.where([not m for m in is_marmoset]).relabel(COARSE), classes, "retain"),
        EvalSet("tiny_imagenet", tiny_imagenet("val", image_size, root).per_class(sizes.tiny_eval_per_class),
                tiny_imagenet_names(root), "retain"),
        EvalSet("cifar10", cifar10("test", image_size, None, sizes.cifar_eval_per_class, 0, root),
                list(CIFAR10_CLASSES), "retain"),
    ]
    if sizes.imagenet_eval:
        eval_sets.append(EvalSet("imagenet", imagenet_all_samples(image_size, root), imagenet_names(root), "retain"))
    return task, eval_sets


SIZES = {
    "quick": MonkeySizes(train_per_species=12, calibration_per_species=4, tiny_eval_per_class=2,
                         cifar_eval_per_class=10, imagenet_eval=False, reference_tiny_per_class=0,
                         reference_cifar_per_class=0),
    "small": MonkeySizes(train_per_species=60, calibration_per_species=20, tiny_eval_per_class=10,
                         cifar_eval_per_class=100),
    "paper": MonkeySizes(),
}

SETTING = register_setting(Setting(
    "monkeys", "Monkey without marmoset: forget pygmy and silvery marmosets as 'monkey', keep the other monkeys",
    monkeys_task, SIZES,
))
