"""Stage 3, restoring: the model soup ``theta(alpha) = alpha * theta_unlearned + (1 - alpha) * theta_original``.

alpha is chosen on a calibration set never used in training (held-out forget and retain images): among the alphas
whose forget accuracy stays within ``tolerance`` of its floor (the lowest forget accuracy on the grid), the one with
the highest retain accuracy; ties go to the smaller alpha (closer to the original model). The whole curve is kept.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .data import ImageSet
from .evaluate import zero_shot_accuracy
from .layers import VisualOnly, interpolate_states
from .models import ClipBundle
from .task import ProgressFn, no_progress
from .zeroshot import text_classifier


@dataclass
class RestoreConfig:
    alphas: list[float] = field(default_factory=lambda: [round(a, 2) for a in np.linspace(0, 1, 21)])
    tolerance: float = 0.02  # forget accuracy may sit this far above its floor


def soup(theta_unlearned: dict[str, torch.Tensor], theta_original: dict[str, torch.Tensor], alpha: float):
    """WiSE-FT / model-soup interpolation of two state dicts."""
    return interpolate_states(theta_unlearned, theta_original, alpha)


def souped_visual(template: nn.Module, theta_u: dict, theta_0: dict, alpha: float) -> nn.Module:
    visual = copy.deepcopy(template)
    visual.load_state_dict(soup(theta_u, theta_0, alpha))
    return visual.eval()


def alpha_curve(
    bundle: ClipBundle,
    theta_u: dict[str, torch.Tensor],
    theta_0: dict[str, torch.Tensor],
    sets: dict[str, tuple[ImageSet, list[str]]],
    alphas: list[float],
    progress: ProgressFn = no_progress,
    cancel=None,
) -> list[dict]:
    """Zero-shot accuracy of every set at every alpha: ``[{"alpha": a, "<set>": acc, ...}]``."""
    scratch = copy.deepcopy(bundle.model.visual).eval()
    wrapper = VisualOnly(scratch)
    classifiers = {name: text_classifier(bundle, classes) for name, (_, classes) in sets.items()}
    curve = []
    for i, alpha in enumerate(alphas):
        if cancel is not None and cancel.is_set():
            from .task import RunCancelled

            raise RunCancelled("run cancelled")
        scratch.load_state_dict(soup(theta_u, theta_0, alpha))
        row = {"alpha": float(alpha)}
        for name, (images, classes) in sets.items():
            row[name] = zero_shot_accuracy(bundle, images, classes, wrapper, classifiers[name])
        curve.append(row)
        progress("restore", (i + 1) / len(alphas), f"alpha {alpha:.2f}")
    return curve


def select_alpha(curve: list[dict], forget_key: str, retain_key: str, tolerance: float) -> float:
    """The calibration rule of the module docstring."""
    floor = min(row[forget_key] for row in curve)
    admissible = [row for row in curve if row[forget_key] <= floor + tolerance]
    best = max(admissible, key=lambda row: (row[retain_key], -row["alpha"]))
    return float(best["alpha"])


def restore_config_dict(cfg: RestoreConfig) -> dict:
    return asdict(cfg)
