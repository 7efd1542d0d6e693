"""Metrics of the paper: zero-shot accuracy per set, ratio = min(acc / acc_original, 1), and the Score."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .data import ImageSet
from .models import ClipBundle
from .zeroshot import encode_images, logits, text_classifier


def zero_shot_predictions(
    bundle: ClipBundle,
    images: ImageSet,
    classnames: Sequence[str],
    model: torch.nn.Module | None = None,
    classifier: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predicted class index per image (argmax of cosine similarity to the template-averaged class texts)."""
    classifier = classifier if classifier is not None else text_classifier(bundle, classnames)
    feats = encode_images(bundle, images.images, model=model)
    return logits(bundle, feats, classifier).argmax(1).cpu()


def zero_shot_accuracy(
    bundle: ClipBundle,
    images: ImageSet,
    classnames: Sequence[str],
    model: torch.nn.Module | None = None,
    classifier: torch.Tensor | None = None,
) -> float:
    """Top-1 zero-shot accuracy of ``images`` (labels must be among ``classnames``)."""
    if len(images) == 0:
        return float("nan")
    index = {c: i for i, c in enumerate(classnames)}
    missing = {x for x in images.labels if x not in index}
    if missing:
        raise ValueError(f"labels {sorted(missing)} are not among the zero-shot classes {list(classnames)}")
    targets = torch.tensor([index[x] for x in images.labels])
    preds = zero_shot_predictions(bundle, images, classnames, model, classifier)
    return float((preds == targets).float().mean())


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


def score_from_sets(results: Mapping[str, Mapping[str, float]], target: str) -> float:
    """Score from ``{set: {"acc", "acc_original"}}`` where ``target`` names the forgotten set."""
    target_ratio = ratio(results[target]["acc"], results[target]["acc_original"])
    retained = [ratio(v["acc"], v["acc_original"]) for k, v in results.items() if k != target]
    return score(target_ratio, retained)
