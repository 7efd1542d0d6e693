"""Out-of-domain setting (paper Tab. 2): forget one CIFAR-10 class, keep the other nine and the same class in other
domains: Tiny-ImageNet val photos of the class (where Tiny-ImageNet has it) and its ImageNet samples."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clipforget.core.errors import DataError
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.data.imagenet import IMAGENET_TO_CIFAR10, imagenet_samples
from clipforget.data.images import ImageSet
from clipforget.data.reference import reference_images
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.data.tiny_imagenet import tiny_imagenet

from .registry import Setting, register_setting

# Tiny-ImageNet classes (display names) showing a CIFAR-10 class; airplane and horse have none.
TINY_TO_CIFAR10: dict[str, tuple[str, ...]] = {
    "automobile": ("sports car", "convertible", "beach wagon", "limousine"),
    "bird": ("goose", "albatross", "king penguin", "black stork"),
    "cat": ("tabby", "Persian cat", "Egyptian cat"),
    "deer": ("gazelle",),
    "dog": ("Chihuahua", "Yorkshire terrier", "golden retriever", "Labrador retriever", "German shepherd",
            "standard poodle"),
    "frog": ("bullfrog", "tailed frog"),
    "ship": ("lifeboat", "gondola"),
    "truck": ("moving van", "police van"),
}


def other_domain_images(forget_class: str, image_size: int, root: str | os.PathLike | None = None) -> ImageSet:
    """The class in other domains: its Tiny-ImageNet val photos and its ImageNet samples, labelled by the class."""
    sets = []
    names = TINY_TO_CIFAR10.get(forget_class, ())
    if names:
        tiny = tiny_imagenet("val", image_size, root)
        sets.append(tiny.where([x in names for x in tiny.labels]).relabel(forget_class))
    samples = imagenet_samples(image_size, IMAGENET_TO_CIFAR10, root)
    sets.append(samples.where([x == forget_class for x in samples.labels]))
    return ImageSet.concat(sets)


@dataclass
class Cifar10Sizes:
    forget: int = 500  # train images of the class to forget
    retain_per_class: int = 100  # train images of each other class
    calibration_forget: int = 100  # held-out train images, never trained on by the unlearning
    calibration_retain_per_class: int = 30
    eval_per_class: int | None = None  # test images per class (None: all 1,000)
    reference_tiny_per_class: int = 3  # Tiny-ImageNet train images per class, distillation only (decisions D10)


def cifar10_class_task(
    image_size: int, seed: int = 0, sizes: Cifar10Sizes | None = None, forget_class: str = "airplane",
    root: str | os.PathLike | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Forget CIFAR-10 ``forget_class``; keep the other nine, the class in other domains and the ImageNet samples."""
    if forget_class not in CIFAR10_CLASSES:
        raise DataError(f"unknown CIFAR-10 class {forget_class!r}; choose from {', '.join(CIFAR10_CLASSES)}")
    sizes = sizes or Cifar10Sizes()
    others = tuple(c for c in CIFAR10_CLASSES if c != forget_class)
    classes = list(CIFAR10_CLASSES)
    forget = cifar10("train", image_size, (forget_class,), sizes.forget, 0, root, seed)
    retain = cifar10("train", image_size, others, sizes.retain_per_class, 0, root, seed)
    cal_forget = cifar10("train", image_size, (forget_class,), sizes.calibration_forget, sizes.forget, root, seed)
    cal_retain = cifar10("train", image_size, others, sizes.calibration_retain_per_class, sizes.retain_per_class,
                         root, seed)
    task = UnlearningTask(forget, retain, classes, cal_forget, cal_retain, name=f"cifar10-{forget_class}",
                          reference=reference_images(image_size, sizes.reference_tiny_per_class, 0, seed, root))
    test_target = cifar10("test", image_size, (forget_class,), sizes.eval_per_class, 0, root)
    test_retain = cifar10("test", image_size, others, sizes.eval_per_class, 0, root)
    imagenet = imagenet_samples(image_size, IMAGENET_TO_CIFAR10, root)
    eval_sets = [
        EvalSet("cifar10_target", test_target, classes, "target"),
        EvalSet("cifar10_retain", test_retain, classes, "retain"),
        EvalSet("other_domain_target", other_domain_images(forget_class, image_size, root), classes, "retain"),
        EvalSet("imagenet_all", imagenet, classes, "retain"),
    ]
    return task, eval_sets


SIZES = {
    "quick": Cifar10Sizes(forget=24, retain_per_class=6, calibration_forget=12, calibration_retain_per_class=4,
                          eval_per_class=10, reference_tiny_per_class=0),
    "small": Cifar10Sizes(forget=200, retain_per_class=40, calibration_forget=50, calibration_retain_per_class=15,
                          eval_per_class=100),
    "paper": Cifar10Sizes(),
}

SETTING = register_setting(Setting(
    "cifar10", "CIFAR-10 class forgetting: forget one class, keep the other nine and ImageNet",
    cifar10_class_task, SIZES, choice_option="forget_class", choices=CIFAR10_CLASSES, default_choice="airplane",
))
