"""BREEDS LIVING-17 (paper Tab. 1): forget one subclass per superclass (marmoset in monkey, box turtle in turtle)
from an ImageNet-style folder; keep the other subclasses, the other superclasses and CIFAR-10."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforget.core.errors import DataError
from clipforget.core.paths import existing
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.data.imagenet import living17, short_name
from clipforget.data.images import ImageSet, list_image_files, read_images
from clipforget.data.task import EvalSet, UnlearningTask

from .registry import Setting, register_setting

LIVING17_FORGET = {"monkey": "marmoset", "turtle": "box turtle"}


@dataclass
class Living17Sizes:
    train_per_subclass: int = 100  # forget / retain images per subclass
    calibration_per_subclass: int = 25
    eval_per_subclass: int = 50  # held-out images per subclass (also for the other superclasses)
    cifar_eval_per_class: int = 50  # CIFAR-10 test images per class (the "other dataset"); 0 leaves it out


def living17_task(
    image_size: int, seed: int = 0, sizes: Living17Sizes | None = None, imagenet_root: str | os.PathLike | None = None,
    forget: dict[str, str] | None = None, root: str | os.PathLike | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Forget one subclass per superclass (``{superclass: subclass}``, default marmoset/monkey, box turtle/turtle).

    ``imagenet_root`` holds one folder per WordNet id (ImageNet's ``train/`` or ``val/`` layout); each subclass's
    files are shuffled by ``seed`` and cut into train / calibration / evaluation slices. Folders of the forgotten
    superclasses must exist; missing folders of other superclasses are left out of the evaluation.
    """
    if not imagenet_root:
        raise DataError("the living17 setting needs an ImageNet folder (--imagenet-root: one sub-folder per wnid)")
    forget = forget or LIVING17_FORGET
    sizes = sizes or Living17Sizes()
    supers = {short_name(k): v for k, v in living17(root).items()}
    for sup, sub in forget.items():
        if sup not in supers:
            raise DataError(f"{sup!r} is not a LIVING-17 superclass; choose from {', '.join(supers)}")
        if sub not in [short_name(s["name"]) for s in supers[sup]]:
            raise DataError(f"{sub!r} is not a subclass of {sup!r}: {[short_name(s['name']) for s in supers[sup]]}")
    classes = list(supers)
    base = existing(Path(imagenet_root), "ImageNet folder", folder=True)
    n_train, n_cal, n_eval = sizes.train_per_subclass, sizes.calibration_per_subclass, sizes.eval_per_subclass
    rng = np.random.default_rng(seed)

    def read(sup: str, entry: dict, required: bool) -> tuple[ImageSet, ImageSet, ImageSet] | None:
        folder = base / entry["wnid"]
        if not folder.is_dir():
            if required:
                raise DataError(f"missing ImageNet folder {folder} ({entry['name']}, needed for {sup!r})")
            return None
        files = list_image_files(folder)
        files = [files[i] for i in rng.permutation(len(files))][: n_train + n_cal + n_eval if required else n_eval]
        picked = read_images(files, image_size, [sup] * len(files))
        if not required:  # other superclasses: evaluation only
            empty = picked.subset([])
            return empty, empty, picked
        n = len(picked)
        if n < 3:
            raise DataError(f"{folder}: need at least 3 readable images, found {n}")
        a = max(1, min(n_train, n - 2))
        b = max(a + 1, min(a + n_cal, n - 1))
        return picked.subset(range(a)), picked.subset(range(a, b)), picked.subset(range(b, n))

    parts: dict[str, list[ImageSet]] = {k: [] for k in ("f", "r", "cf", "cr", "ef", "er", "other")}
    for sup, entries in supers.items():
        for entry in entries:
            if sup in forget:
                train, cal, held = read(sup, entry, True)
                is_target = short_name(entry["name"]) == forget[sup]
                parts["f" if is_target else "r"].append(train)
                parts["cf" if is_target else "cr"].append(cal)
                parts["ef" if is_target else "er"].append(held)
            else:
                got = read(sup, entry, False)
                if got is not None and len(got[2]):
                    parts["other"].append(got[2])
    name = "living17-" + "-".join(f"{forget[s].replace(' ', '_')}_in_{s}" for s in forget)
    task = UnlearningTask(ImageSet.concat(parts["f"]), ImageSet.concat(parts["r"]), classes,
                          ImageSet.concat(parts["cf"]), ImageSet.concat(parts["cr"]), name=name)
    eval_sets = [
        EvalSet("imagenet_target", ImageSet.concat(parts["ef"]), classes, "target"),
        EvalSet("imagenet_retain", ImageSet.concat(parts["er"]), classes, "retain"),
    ]
    if parts["other"]:
        eval_sets.append(EvalSet("living17_other", ImageSet.concat(parts["other"]), classes, "retain"))
    if sizes.cifar_eval_per_class:
        try:
            cifar = cifar10("test", image_size, None, sizes.cifar_eval_per_class, 0, root)
            eval_sets.append(EvalSet("cifar10", cifar, list(CIFAR10_CLASSES), "retain"))
        except DataError:
            pass  # no CIFAR-10 here: the ImageNet sets still make the table
    return task, eval_sets


SIZES = {
    "quick": Living17Sizes(train_per_subclass=8, calibration_per_subclass=4, eval_per_subclass=4,
                           cifar_eval_per_class=4),
    "small": Living17Sizes(train_per_subclass=40, calibration_per_subclass=15, eval_per_subclass=20,
                           cifar_eval_per_class=20),
    "paper": Living17Sizes(),
}

SETTING = register_setting(Setting(
    "living17", "LIVING-17: 'monkey' without 'marmoset' and 'turtle' without 'box turtle' (needs an ImageNet folder)",
    living17_task, SIZES,
))
