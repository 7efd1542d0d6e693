"""Stage 3, restoring: the model soup ``theta(alpha)`` (:func:`clipforget.models.weights.soup`) with alpha chosen on a
held-out calibration set by the rule of docs/decisions.md D4. The whole accuracy-vs-alpha curve is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from clipforget.core.progress import ProgressFn, check_cancelled, no_progress
from clipforget.data.images import ImageSet
from clipforget.evaluation import zero_shot_accuracy
from clipforget.models.encode import text_classifier
from clipforget.models.factory import ClipBundle
from clipforget.models.layers import VisualOnly
from clipforget.models.weights import State, soup


def grid_alphas(n: int = 21) -> list[float]:
    """``n`` evenly spaced alphas over [0, 1], rounded to 2 decimals (the slider's steps for n = 21)."""
    return [round(float(a), 2) for a in np.linspace(0, 1, n)]


@dataclass
class RestoreConfig:
    alphas: list[float] = field(default_factory=grid_alphas)
    tolerance: float = 0.02  # forget accuracy may sit this far above its floor


def alpha_curve(
    bundle: ClipBundle,
    theta_u: State,
    theta_0: State,
    sets: Mapping[str, tuple[ImageSet, Sequence[str]]],
    alphas: Sequence[float],
    progress: ProgressFn = no_progress,
    cancel=None,
) -> list[dict]:
    """Zero-shot accuracy of every set at every alpha: ``[{"alpha": a, "<set>": acc, ...}]``."""
    scratch = copy.deepcopy(bundle.model.visual).eval()
    wrapper = VisualOnly(scratch)
    classifiers = {name: text_classifier(bundle, classes) for name, (_, classes) in sets.items()}
    curve = []
    for i, alpha in enumerate(alphas):
        check_cancelled(cancel)
        scratch.load_state_dict(soup(theta_u, theta_0, alpha))
        row = {"alpha": float(alpha)}
        for name, (images, classes) in sets.items():
            row[name] = zero_shot_accuracy(bundle, images, classes, wrapper, classifiers[name])
        curve.append(row)
        progress("restore", (i + 1) / len(alphas), f"alpha {alpha:.2f}")
    return curve


def select_alpha(curve: list[dict], forget_key: str, retain_key: str, tolerance: float) -> float:
    """The calibration rule (docs/decisions.md D4)."""
    floor = min(row[forget_key] for row in curve)
    admissible = [row for row in curve if row[forget_key] <= floor + tolerance]
    best = max(admissible, key=lambda row: (row[retain_key], -row["alpha"]))
    return float(best["alpha"])


def souped_tower(template: torch.nn.Module, theta_u: State, theta_0: State, alpha: float) -> torch.nn.Module:
    """A copy of ``template`` holding ``theta(alpha)``, in eval mode."""
    visual = copy.deepcopy(template)
    visual.load_state_dict(soup(theta_u, theta_0, alpha))
    return visual.eval()
