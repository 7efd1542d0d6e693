"""Style forgetting (paper Tab. 3): one CIFAR-10 class rendered in the four PIL styles; forget one style, keep the
other styles and the other classes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clipforget.core.errors import DataError
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.data.imagenet import IMAGENET_TO_CIFAR10, imagenet_samples
from clipforget.data.images import ImageSet
from clipforget.data.styles import STYLES, stylize
from clipforget.data.task import EvalSet, UnlearningTask

from .registry import Setting, register_setting


@dataclass
class StyleSizes:
    train_per_style: int = 100  # train images of the class per style (forget for the target style, else retain)
    calibration_per_style: int = 25
    eval_per_style: int = 100  # test images of the class per style
    eval_other_per_class: int = 50  # test images of every other CIFAR-10 class (photos)
    retain_other_per_class: int = 0  # photos of the other classes added to the retain set (0: styles only)


def style_task(
    image_size: int, seed: int = 0, sizes: StyleSizes | None = None, forget_class: str = "automobile",
    forget_style: str = "sketch", root: str | os.PathLike | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Forget ``forget_class`` images in ``forget_style``; keep the class in the other styles (CIFAR-10 classes).

    Every image gets one style (disjoint slices of the class, as the paper renders each image once).
    """
    if forget_class not in CIFAR10_CLASSES:
        raise DataError(f"unknown CIFAR-10 class {forget_class!r}")
    if forget_style not in STYLES:
        raise DataError(f"unknown style {forget_style!r}; choose from {', '.join(STYLES)}")
    sizes = sizes or StyleSizes()
    classes = list(CIFAR10_CLASSES)
    per_style = sizes.train_per_style + sizes.calibration_per_style
    train, cal, test = {}, {}, {}
    for k, style in enumerate(STYLES):
        pool = cifar10("train", image_size, (forget_class,), per_style, k * per_style, root, seed)
        styled = ImageSet(stylize(pool.images, style), pool.labels, [f"{p}#{style}" for p in pool.paths])
        train[style] = styled.subset(range(min(sizes.train_per_style, len(styled))))
        cal[style] = styled.subset(range(sizes.train_per_style, len(styled)))
        held = cifar10("test", image_size, (forget_class,), sizes.eval_per_style, k * sizes.eval_per_style, root, seed)
        test[style] = ImageSet(stylize(held.images, style), held.labels, [f"{p}#{style}" for p in held.paths])
    kept = [s for s in STYLES if s != forget_style]
    retain = ImageSet.concat([train[s] for s in kept])
    others = tuple(c for c in CIFAR10_CLASSES if c != forget_class)
    if sizes.retain_other_per_class:
        retain = ImageSet.concat(
            [retain, cifar10("train", image_size, others, sizes.retain_other_per_class, 0, root, seed)])
    task = UnlearningTask(train[forget_style], retain, classes, cal[forget_style],
                          ImageSet.concat([cal[s] for s in kept]),
                          name=f"style-{forget_class}-{forget_style.replace(' ', '_')}")
    imagenet = imagenet_samples(image_size, IMAGENET_TO_CIFAR10, root)
    eval_sets = [
        EvalSet("target_style", test[forget_style], classes, "target"),
        EvalSet("retain_styles", ImageSet.concat([test[s] for s in kept]), classes, "retain"),
        EvalSet("cifar10_other", cifar10("test", image_size, others, sizes.eval_other_per_class, 0, root),
                classes, "retain"),
        EvalSet("imagenet_all", imagenet, classes, "retain"),
    ]
    return task, eval_sets


SIZES = {
    "quick": StyleSizes(train_per_style=8, calibration_per_style=4, eval_per_style=8, eval_other_per_class=4),
    "small": StyleSizes(train_per_style=80, calibration_per_style=25, eval_per_style=100, eval_other_per_class=50),
    "paper": StyleSizes(),
}

SETTING = register_setting(Setting(
    "style", "Style forgetting: forget cars drawn in one style, keep cars in the other styles",
    style_task, SIZES, choice_option="forget_style", choices=tuple(s for s in STYLES if s != "photo"),
    default_choice="sketch",
))
