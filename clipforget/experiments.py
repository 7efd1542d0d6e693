"""The paper's other settings, its ablations and the merging extension.

Settings (each returns ``(UnlearningTask, [EvalSet])`` like :func:`clipforget.settings.cifar10_class_task`):

* :func:`style_task` -- style forgetting (Tab. 3): one CIFAR-10 class rendered in the four PIL styles of
  :mod:`clipforget.styles`; forget one style, keep the others.
* :func:`subgroup_task` -- a subgroup inside a coarse class: CIFAR-10 airplanes labelled ``vehicle`` are forgotten,
  the other vehicles stay ``vehicle``; zero-shot classes ``vehicle`` / ``animal``.
* :func:`living17_task` -- BREEDS LIVING-17 (Tab. 1): forget marmoset in ``monkey`` and box turtle in ``turtle``
  from an ImageNet-style folder (``<root>/<wnid>/*.JPEG``).

Ablations and extensions: :func:`remind_steps_sweep` (Tab. 4), :func:`alpha_sweep` (Tab. 5) and
:func:`merge_states` / :func:`continual_merge` (Tab. 6, merging unlearned models for continual forgetting).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import data
from .data import CIFAR10_CLASSES, IMAGENET_TO_CIFAR10, DataError, ImageSet
from .layers import clone_state, interpolate_states
from .methods.ours import ThreeStageConfig
from .models import ClipBundle, load_checkpoint
from .pipeline import EvalSet, evaluate_sets, run_method, run_status
from .prompts import coarse_label
from .settings import Cifar10Sizes, cifar10_class_task
from .styles import STYLES, stylize
from .task import ProgressFn, UnlearningTask, no_progress

# --- style forgetting (Tab. 3) ----------------------------------------------------------------------------------


@dataclass
class StyleSizes:
    train_per_style: int = 100  # train images of the class per style (forget for the target style, else retain)
    calibration_per_style: int = 25
    eval_per_style: int = 100  # test images of the class per style
    eval_other_per_class: int = 50  # test images of every other CIFAR-10 class (photos)
    retain_other_per_class: int = 0  # photos of the other classes added to the retain set (0: styles only)


def style_task(
    target_class: str = "automobile", forget_style: str = "sketch", image_size: int = 64, seed: int = 0,
    sizes: StyleSizes | None = None, root: str | os.PathLike | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Forget ``target_class`` images in ``forget_style``; keep the class in the other styles (CIFAR-10 classes).

    Every image gets one style (disjoint slices of the class, as the paper renders each image once).
    """
    if target_class not in CIFAR10_CLASSES:
        raise DataError(f"unknown CIFAR-10 class {target_class!r}")
    if forget_style not in STYLES:
        raise DataError(f"unknown style {forget_style!r}; choose from {', '.join(STYLES)}")
    sizes = sizes or StyleSizes()
    classes = list(CIFAR10_CLASSES)
    per_style = sizes.train_per_style + sizes.calibration_per_style
    train, cal, test = {}, {}, {}
    for k, style in enumerate(STYLES):
        pool = data.cifar10("train", image_size, (target_class,), per_style, k * per_style, root, seed)
        styled = ImageSet(stylize(pool.images, style), pool.labels, [f"{p}#{style}" for p in pool.paths])
        train[style] = styled.subset(range(min(sizes.train_per_style, len(styled))))
        cal[style] = styled.subset(range(sizes.train_per_style, len(styled)))
        held = data.cifar10("test", image_size, (target_class,), sizes.eval_per_style, k * sizes.eval_per_style,
                            root, seed)
        test[style] = ImageSet(stylize(held.images, style), held.labels, [f"{p}#{style}" for p in held.paths])
    kept = [s for s in STYLES if s != forget_style]
    retain = ImageSet.concat([train[s] for s in kept])
    others = tuple(c for c in CIFAR10_CLASSES if c != target_class)
    if sizes.retain_other_per_class:
        retain = ImageSet.concat(
            [retain, data.cifar10("train", image_size, others, sizes.retain_other_per_class, 0, root, seed)])
    task = UnlearningTask(train[forget_style], retain, classes, cal[forget_style],
                          ImageSet.concat([cal[s] for s in kept]),
                          name=f"style-{target_class}-{forget_style.replace(' ', '_')}")
    imagenet = data.imagenet_samples(image_size, IMAGENET_TO_CIFAR10, root)
    eval_sets = [
        EvalSet("target_style", test[forget_style], classes, "target"),
        EvalSet("retain_styles", ImageSet.concat([test[s] for s in kept]), classes, "retain"),
        EvalSet("cifar10_other", data.cifar10("test", image_size, others, sizes.eval_other_per_class, 0, root),
                classes, "retain"),
        EvalSet("imagenet_all", imagenet, classes, "retain"),
    ]
    return task, eval_sets


# --- subgroup within a coarse class --------------------------------------------------------------------------------


@dataclass
class SubgroupSizes:
    forget: int = 200
    retain_per_class: int = 70  # train images of every other vehicle class (labelled "vehicle")
    retain_animals_per_class: int = 0  # animals labelled "animal" added to the retain set (0: vehicles only)
    calibration_forget: int = 50
    calibration_retain_per_class: int = 20
    eval_per_class: int = 100  # test images per CIFAR-10 class


def subgroup_task(
    forget_class: str = "airplane", image_size: int = 64, seed: int = 0, sizes: SubgroupSizes | None = None,
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

    forget = as_coarse(data.cifar10("train", image_size, (forget_class,), sizes.forget, 0, root, seed))
    retain = as_coarse(data.cifar10("train", image_size, siblings, sizes.retain_per_class, 0, root, seed))
    if sizes.retain_animals_per_class:
        retain = ImageSet.concat([retain, as_coarse(
            data.cifar10("train", image_size, strangers, sizes.retain_animals_per_class, 0, root, seed))])
    cal_forget = as_coarse(data.cifar10("train", image_size, (forget_class,), sizes.calibration_forget,
                                        sizes.forget, root, seed))
    cal_retain = as_coarse(data.cifar10("train", image_size, siblings, sizes.calibration_retain_per_class,
                                        sizes.retain_per_class, root, seed))
    task = UnlearningTask(forget, retain, classes, cal_forget, cal_retain, name=f"subgroup-{forget_class}-in-{coarse}")
    raw = data.imagenet_samples(image_size, IMAGENET_TO_CIFAR10, root)
    imagenet, image_classes = as_coarse(raw), raw.labels
    eval_sets = [
        EvalSet("cifar10_target", as_coarse(data.cifar10("test", image_size, (forget_class,),
                                                         sizes.eval_per_class, 0, root)), classes, "target"),
        EvalSet(f"cifar10_other_{coarse}", as_coarse(data.cifar10("test", image_size, siblings,
                                                                  sizes.eval_per_class, 0, root)), classes, "retain"),
        EvalSet("cifar10_" + ("animal" if coarse == "vehicle" else "vehicle"),
                as_coarse(data.cifar10("test", image_size, strangers, sizes.eval_per_class, 0, root)), classes,
                "retain"),
        EvalSet("imagenet_target", imagenet.where([x == forget_class for x in image_classes]), classes, "retain"),
        EvalSet("imagenet_all", imagenet, classes, "retain"),
    ]
    return task, eval_sets


# --- BREEDS LIVING-17 (Tab. 1) -----------------------------------------------------------------------------------

LIVING17_FORGET = {"monkey": "marmoset", "turtle": "box turtle"}


@dataclass
class Living17Sizes:
    train_per_subclass: int = 100  # forget / retain images per subclass
    calibration_per_subclass: int = 25
    eval_per_subclass: int = 50  # held-out images per subclass (also for the other superclasses)
    cifar_eval_per_class: int = 50  # CIFAR-10 test images per class (the "other dataset"); 0 leaves it out


def short_name(name: str) -> str:
    """``"box turtle, box tortoise"`` -> ``"box turtle"`` (the first WordNet synonym)."""
    return name.split(",")[0].strip()


def living17_task(
    imagenet_root: str | os.PathLike, forget: dict[str, str] | None = None, image_size: int = 64, seed: int = 0,
    sizes: Living17Sizes | None = None, root: str | os.PathLike | None = None,
) -> tuple[UnlearningTask, list[EvalSet]]:
    """Forget one subclass per superclass (``{superclass: subclass}``, default marmoset/monkey, box turtle/turtle).

    ``imagenet_root`` holds one folder per WordNet id (ImageNet's ``train/`` or ``val/`` layout); each subclass's
    files are shuffled by ``seed`` and cut into train / calibration / evaluation slices. Folders of the forgotten
    superclasses must exist; missing folders of other superclasses are left out of the evaluation.
    """
    forget = forget or LIVING17_FORGET
    sizes = sizes or Living17Sizes()
    hierarchy = data.living17(root)
    supers = {short_name(k): v for k, v in hierarchy.items()}
    for sup, sub in forget.items():
        if sup not in supers:
            raise DataError(f"{sup!r} is not a LIVING-17 superclass; choose from {', '.join(supers)}")
        if sub not in [short_name(s["name"]) for s in supers[sup]]:
            raise DataError(f"{sub!r} is not a subclass of {sup!r}: {[short_name(s['name']) for s in supers[sup]]}")
    classes = list(supers)
    base = Path(imagenet_root)
    if not base.is_dir():
        raise DataError(f"ImageNet folder not found: {base}")
    n_train, n_cal, n_eval = sizes.train_per_subclass, sizes.calibration_per_subclass, sizes.eval_per_subclass
    rng = np.random.default_rng(seed)

    def read(sup: str, entry: dict, required: bool) -> tuple[ImageSet, ImageSet, ImageSet] | None:
        folder = base / entry["wnid"]
        if not folder.is_dir():
            if required:
                raise DataError(f"missing ImageNet folder {folder} ({entry['name']}, needed for {sup!r})")
            return None
        files = data.list_image_files(folder)
        files = [files[i] for i in rng.permutation(len(files))]
        if not required:  # other superclasses: evaluation only
            picked = data.read_images(files[:n_eval], image_size, [sup] * len(files[:n_eval]))
            empty = picked.subset([])
            return empty, empty, picked
        picked = data.read_images(files[: n_train + n_cal + n_eval], image_size,
                                  [sup] * len(files[: n_train + n_cal + n_eval]))
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
            cifar = data.cifar10("test", image_size, None, sizes.cifar_eval_per_class, 0, root)
            eval_sets.append(EvalSet("cifar10", cifar, list(CIFAR10_CLASSES), "retain"))
        except DataError:
            pass  # no CIFAR-10 here: the ImageNet sets still make the table
    return task, eval_sets


# --- setting registry -------------------------------------------------------------------------------------------

SMALL_CIFAR10 = Cifar10Sizes(forget=200, retain_per_class=40, calibration_forget=50, calibration_retain_per_class=15,
                             eval_per_class=100)
SMALL_STYLE = StyleSizes(train_per_style=80, calibration_per_style=25, eval_per_style=100, eval_other_per_class=50)
SMALL_SUBGROUP = SubgroupSizes(forget=200, retain_per_class=70, calibration_forget=50, calibration_retain_per_class=20,
                               eval_per_class=100)


@dataclass
class SettingOptions:
    """What a setting builder may need: the class to forget, the style, the ImageNet folder, the size preset."""

    forget_class: str | None = None
    forget_style: str = "sketch"
    imagenet_root: str | None = None
    small: bool = True  # the reduced sizes used for the CPU benchmarks (see BENCHMARKS.md)
    root: str | None = None


SETTINGS = ("cifar10", "style", "subgroup", "living17")


def build_setting(name: str, image_size: int, seed: int, options: SettingOptions | None = None
                  ) -> tuple[UnlearningTask, list[EvalSet]]:
    """Build one of :data:`SETTINGS` (``small`` selects the CPU benchmark sizes)."""
    o = options or SettingOptions()
    if name == "cifar10":
        return cifar10_class_task(o.forget_class or "airplane", image_size, seed,
                                  SMALL_CIFAR10 if o.small else None, o.root)
    if name == "style":
        return style_task(o.forget_class or "automobile", o.forget_style, image_size, seed,
                          SMALL_STYLE if o.small else None, o.root)
    if name == "subgroup":
        return subgroup_task(o.forget_class or "airplane", image_size, seed,
                             SMALL_SUBGROUP if o.small else None, o.root)
    if name == "living17":
        if not o.imagenet_root:
            raise DataError("the living17 setting needs --imagenet-root (a folder with one sub-folder per wnid)")
        return living17_task(o.imagenet_root, None, image_size, seed, None, o.root)
    raise DataError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")


# --- ablations (Tab. 4, Tab. 5) ----------------------------------------------------------------------------------


def _done_or_run(bundle: ClipBundle, task: UnlearningTask, out: Path, method: str, config: Any,
                 eval_sets: list[EvalSet], progress: ProgressFn, extra: dict | None = None) -> dict:
    """metrics.json of a finished run folder, or run it now."""
    import json

    if run_status(out).get("state") == "done" and (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return run_method(bundle, task, out, method, config, eval_sets, progress, extra).metrics


def remind_steps_sweep(
    bundle: ClipBundle, task: UnlearningTask, eval_sets: list[EvalSet], steps: Sequence[int],
    out_dir: str | os.PathLike, seed: int = 0, progress: ProgressFn = no_progress,
) -> list[dict]:
    """Tab. 4: ``ours`` with each number of reminding steps (everything else at its defaults); one run per value."""
    rows = []
    for n in steps:
        cfg = ThreeStageConfig()
        cfg.remind.steps = int(n)
        cfg.forget.seed = cfg.remind.seed = seed
        metrics = _done_or_run(bundle, task, Path(out_dir) / f"steps{n}", "ours", cfg, eval_sets, progress,
                               {"seed": seed, "ablation": "remind_steps", "value": n})
        rows.append({"steps": int(n), "alpha": metrics["alpha"], "score": metrics["score"],
                     **{k: v["acc"] for k, v in metrics["zero_shot"].items()}})
    return rows


def alpha_sweep(
    bundle: ClipBundle, unlearned_state: dict[str, torch.Tensor], eval_sets: list[EvalSet], alphas: Sequence[float],
) -> list[dict]:
    """Tab. 5: accuracy of every eval set at fixed soup coefficients ``alpha`` (no calibration)."""
    theta_0 = clone_state(bundle.model.visual)
    visual = copy.deepcopy(bundle.model.visual).eval()
    rows = []
    for a in alphas:
        visual.load_state_dict(interpolate_states(unlearned_state, theta_0, float(a)))
        rows.append({"alpha": float(a), **evaluate_sets(bundle, visual, eval_sets)})
    return rows


# --- merging for continual forgetting (Tab. 6) -------------------------------------------------------------------


def merge_states(
    states: Sequence[dict[str, torch.Tensor]], base: dict[str, torch.Tensor] | None = None, mode: str = "mean",
) -> dict[str, torch.Tensor]:
    """Merge image-tower states of models that each forgot something.

    ``mean``: the average of the states -- equal to ``base + mean_i (theta_i - base)``, i.e. averaging the task
    vectors (the paper's "simply merged"). ``sum``: task arithmetic, ``base + sum_i (theta_i - base)`` (needs
    ``base``; keeps each model's full edit, at the risk of compounding damage). Integer buffers come from the first
    state (or ``base``).
    """
    if not states:
        raise ValueError("nothing to merge")
    if mode not in ("mean", "sum"):
        raise ValueError(f"merge mode must be 'mean' or 'sum', not {mode!r}")
    if mode == "sum" and base is None:
        raise ValueError("task-arithmetic merging ('sum') needs the base state")
    ref = base if base is not None else states[0]
    out = {}
    for key, value in ref.items():
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        stacked = torch.stack([s[key].float() for s in states])
        merged = stacked.mean(0) if mode == "mean" else base[key].float() + (stacked - base[key].float()).sum(0)
        out[key] = merged.to(value.dtype)
    return out


def per_class_accuracy(bundle: ClipBundle, visual: torch.nn.Module | None, images: ImageSet,
                       classnames: Sequence[str]) -> dict[str, float]:
    """Zero-shot accuracy of each class of ``images`` (over the vocabulary ``classnames``)."""
    from .evaluate import zero_shot_accuracy
    from .layers import VisualOnly

    model = VisualOnly(visual) if visual is not None else None
    out = {}
    for name in classnames:
        subset = images.where([x == name for x in images.labels])
        if len(subset):
            out[name] = zero_shot_accuracy(bundle, subset, classnames, model)
    return out


@dataclass
class MergeResult:
    rows: list[dict] = field(default_factory=list)  # {"model": "S+A", "mode": "mean", <class>: acc, ...}


def continual_merge(
    bundle: ClipBundle, out_dir: str | os.PathLike, classes: Sequence[str] = ("ship", "airplane", "cat"),
    seed: int = 0, sizes: Cifar10Sizes | None = None, modes: Sequence[str] = ("mean", "sum"),
    eval_per_class: int = 100, progress: ProgressFn = no_progress,
) -> MergeResult:
    """Tab. 6: forget each class with ``ours`` alone, then merge the final models cumulatively (S, S+A, S+A+C)."""
    out = Path(out_dir)
    test = data.cifar10("test", bundle.image_size, None, eval_per_class, 0)
    names = list(CIFAR10_CLASSES)
    result = MergeResult([{"model": "Original", "mode": "-", **per_class_accuracy(bundle, None, test, names)}])
    states, theta_0 = [], clone_state(bundle.model.visual)
    visual = copy.deepcopy(bundle.model.visual).eval()
    for cls in classes:
        task, eval_sets = cifar10_class_task(cls, bundle.image_size, seed, sizes or SMALL_CIFAR10)
        cfg = ThreeStageConfig()
        cfg.forget.seed = cfg.remind.seed = seed
        run_dir = out / f"forget-{cls}"
        _done_or_run(bundle, task, run_dir, "ours", cfg, eval_sets, progress, {"seed": seed, "ablation": "merge"})
        state = load_checkpoint(run_dir / "model").model.visual.state_dict()
        states.append(state)
        visual.load_state_dict(state)
        result.rows.append({"model": cls[0].upper(), "mode": "-", **per_class_accuracy(bundle, visual, test, names)})
    for k in range(2, len(states) + 1):
        label = "+".join(c[0].upper() for c in classes[:k])
        for mode in modes:
            visual.load_state_dict(merge_states(states[:k], theta_0, mode))
            result.rows.append({"model": label, "mode": mode, **per_class_accuracy(bundle, visual, test, names)})
    return result
