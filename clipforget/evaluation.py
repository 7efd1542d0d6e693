"""Metrics of the paper: zero-shot accuracy per set, ratio = min(acc / acc_original, 1), and the Score.

The Score is computed in one place, :func:`summarize`, from per-set accuracies and roles; the run folder, the bench
tables, the app's metrics at any alpha and the model card all call it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from clipforget.core.atomic import read_json, write_json
from clipforget.core.paths import cache_dir, safe_name
from clipforget.data.images import ImageSet
from clipforget.data.task import EvalSet
from clipforget.models.encode import encode_images, logits, text_classifier
from clipforget.models.factory import ClipBundle, weights_fingerprint
from clipforget.models.layers import VisualOnly


def zero_shot_accuracy(bundle: ClipBundle, images: ImageSet, classnames: Sequence[str],
                       model: torch.nn.Module | None = None, classifier: torch.Tensor | None = None) -> float:
    """Top-1 zero-shot accuracy of ``images`` (labels must be among ``classnames``): the argmax of cosine similarity
    to the template-averaged class texts."""
    if len(images) == 0:
        return float("nan")
    index = {c: i for i, c in enumerate(classnames)}
    missing = {x for x in images.labels if x not in index}
    if missing:
        raise ValueError(f"labels {sorted(missing)} are not among the zero-shot classes {list(classnames)}")
    targets = torch.tensor([index[x] for x in images.labels])
    classifier = classifier if classifier is not None else text_classifier(bundle, classnames)
    feats = encode_images(bundle, images.images, model=model)
    preds = logits(bundle, feats, classifier).argmax(1).cpu()
    return float((preds == targets).float().mean())


def per_class_accuracy(bundle: ClipBundle, visual: torch.nn.Module | None, images: ImageSet,
                       classnames: Sequence[str]) -> dict[str, float]:
    """Zero-shot accuracy of each class of ``images`` (over the vocabulary ``classnames``)."""
    model = VisualOnly(visual) if visual is not None else None
    out = {}
    for name in classnames:
        subset = images.where([x == name for x in images.labels])
        if len(subset):
            out[name] = zero_shot_accuracy(bundle, subset, classnames, model)
    return out


def evaluate_sets(bundle: ClipBundle, visual: torch.nn.Module | None, sets: Sequence[EvalSet]) -> dict[str, float]:
    """Zero-shot accuracy of every set under ``visual`` (``None``: the bundle's own image tower)."""
    model = VisualOnly(visual) if visual is not None else None
    return {s.name: zero_shot_accuracy(bundle, s.images, s.classnames, model) for s in sets}


def ratio(acc: float, acc_original: float) -> float:
    """The paper's ratio, capped at 1 ("full restoration"); 1.0 when the original was already at 0."""
    if acc_original <= 0 or math.isnan(acc_original):
        return 1.0
    return min(acc / acc_original, 1.0)


def score(target_ratio: float, retained_ratios: Sequence[float]) -> float:
    """The paper's Score in percent: mean of (1 - target ratio) and every retained set's ratio.

    Checked against Table 1 (RN50, FT row): target 4.9 %, retained 100, 42.8, 19.2, 28.5, 46.8, 28.4 -> 51.5.
    """
    terms = [1.0 - target_ratio, *retained_ratios]
    return 100.0 * sum(terms) / len(terms)


def summarize(original: Mapping[str, float], final: Mapping[str, float], roles: Mapping[str, str],
              sizes: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Per-set acc / acc_original / ratio / role and the Score; several target sets count as their mean ratio."""
    zero_shot = {name: {"acc": final[name], "acc_original": original[name], "ratio": ratio(final[name], original[name]),
                        "role": roles[name], **({"images": sizes[name]} if sizes and name in sizes else {})}
                 for name in final}
    targets = [v["ratio"] for v in zero_shot.values() if v["role"] == "target"]
    retained = [v["ratio"] for v in zero_shot.values() if v["role"] != "target"]
    target_ratio = sum(targets) / len(targets) if targets else 0.0
    return {"zero_shot": zero_shot, "score": score(target_ratio, retained)}


# an evaluation set this small moves its accuracy by 3+ points per image: too coarse to trust its ratio or the Score
MIN_TRUSTED_IMAGES = 30
KEPT_FLOOR = 0.8  # a kept set below this share of its accuracy: the forgetting took it along
FORGOTTEN_CEILING = 0.5  # a forget set above this share: not forgotten


def run_warnings(zero_shot: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What a reader of the Score must know, in words: kept sets that lost much of their accuracy, forget sets that
    kept much of theirs, and sets too small to trust (the Score hides all three)."""
    out = []
    for name, v in zero_shot.items():
        shift = f"{100 * v['acc_original']:.1f} % → {100 * v['acc']:.1f} %"
        if "images" in v and v["images"] < MIN_TRUSTED_IMAGES:
            out.append(f"'{name}' holds {v['images']} images (< {MIN_TRUSTED_IMAGES}; {shift}): one image moves its "
                       f"accuracy by {100 / max(v['images'], 1):.0f} points, too few to trust")
        elif v["role"] != "target" and v["ratio"] < KEPT_FLOOR:
            out.append(f"'{name}' keeps only {v['ratio']:.2f} of its zero-shot accuracy ({shift}): the forgetting "
                       "took these kept images along; the model may not tell the subgroup from them")
        elif v["role"] == "target" and v["ratio"] > FORGOTTEN_CEILING:
            out.append(f"'{name}' keeps {v['ratio']:.2f} of its zero-shot accuracy ({shift}): not forgotten")
    return out


def _set_key(s: EvalSet) -> str:
    digest = hashlib.sha1()
    for part in (s.name, *s.classnames, "|", *s.images.labels, "|", *s.images.paths):
        digest.update(part.encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()[:16]


def original_accuracies(bundle: ClipBundle, sets: Sequence[EvalSet]) -> dict[str, float]:
    """Zero-shot accuracy of the original model on every set, cached on disk per model weights and set contents.

    The original model's accuracy is the same for every run of a setting; the cache (``<cache>/evaluations/``)
    makes it a lookup after the first run. Sets are identified by their name, class names, labels and image paths.
    """
    folder = cache_dir() / "evaluations" / f"{safe_name(bundle.spec.split('/')[-1])}-{weights_fingerprint(bundle)}"
    out: dict[str, float] = {}
    for s in sets:
        path = folder / f"{safe_name(s.name)}-{_set_key(s)}.json"
        cached = read_json(path)
        if "accuracy" in cached:
            out[s.name] = float(cached["accuracy"])
            continue
        out[s.name] = zero_shot_accuracy(bundle, s.images, s.classnames)
        write_json(path, {"set": s.name, "images": len(s.images), "accuracy": out[s.name]})
    return out
