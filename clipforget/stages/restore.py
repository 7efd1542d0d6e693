"""Stage 3, restoring: the model soup ``theta(alpha)`` (:func:`clipforget.models.weights.soup`) with alpha chosen on a
held-out calibration set by the rule of docs/decisions.md D4: forgotten in zero-shot accuracy *and* in retrieval
(the forget images' share of the top ranks for their label text), then the best retain accuracy. The whole curve is
kept.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from clipforget.core.progress import ProgressFn, check_cancelled, no_progress
from clipforget.data.images import ImageSet
from clipforget.models.encode import encode_images, logits, text_classifier
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
    retrieval_tolerance: float | None = 0.05  # the forget images' top-rank share may sit this far above its floor
    # (None: the rule looks at zero-shot accuracy only, as in the paper's Eq. 6)


@dataclass
class RetrievalProbe:
    """Retrieval on the calibration sets: rank the union of ``forget`` and ``retain`` images for each text; the
    share of forget images among the top ``len(forget)`` is how well the forget images are still retrieved."""

    forget: str
    retain: str
    texts: torch.Tensor  # T,D unit-norm text embeddings (the forget labels')


def top_share(forget_feats: torch.Tensor, retain_feats: torch.Tensor, texts: torch.Tensor) -> float:
    """Mean over texts of the forget images' share of the top-``len(forget)`` of the union, ranked by cosine."""
    gallery = torch.cat([forget_feats, retain_feats])
    k = len(forget_feats)
    if k == 0 or len(retain_feats) == 0:
        return float("nan")
    top = (gallery @ texts.to(gallery.device).T).topk(k, dim=0).indices  # k,T
    return float((top < k).float().mean())


RETRIEVAL_KEY = "forget_retrieval"


def alpha_curve(bundle: ClipBundle, theta_u: State, theta_0: State, sets: Mapping[str, tuple[ImageSet, Sequence[str]]],
                alphas: Sequence[float], progress: ProgressFn = no_progress, cancel=None,
                retrieval: RetrievalProbe | None = None) -> list[dict]:
    """Zero-shot accuracy of every set at every alpha, ``[{"alpha": a, "<set>": acc, ...}]``, plus
    ``forget_retrieval`` (:func:`top_share`) when a ``retrieval`` probe is given. Each set is encoded once per alpha."""
    scratch = copy.deepcopy(bundle.model.visual).eval()
    wrapper = VisualOnly(scratch)
    classifiers = {name: text_classifier(bundle, classes) for name, (_, classes) in sets.items()}
    targets = {name: torch.tensor([list(classes).index(x) for x in images.labels])
               for name, (images, classes) in sets.items()}
    curve = []
    for i, alpha in enumerate(alphas):
        check_cancelled(cancel)
        scratch.load_state_dict(soup(theta_u, theta_0, alpha))
        row: dict[str, float] = {"alpha": float(alpha)}
        feats = {name: encode_images(bundle, images.images, model=wrapper) for name, (images, _) in sets.items()}
        for name in sets:
            predictions = logits(bundle, feats[name], classifiers[name]).argmax(1).cpu()
            row[name] = float((predictions == targets[name]).float().mean()) if len(predictions) else float("nan")
        if retrieval is not None:
            row[RETRIEVAL_KEY] = top_share(feats[retrieval.forget], feats[retrieval.retain], retrieval.texts)
        curve.append(row)
        progress("restore", (i + 1) / len(alphas), f"alpha {alpha:.2f}")
    return curve


def select_alpha(curve: list[dict], forget_key: str, retain_key: str, tolerance: float,
                 retrieval_tolerance: float | None = None) -> float:
    """The calibration rule (docs/decisions.md D4): admissible alphas keep the forget accuracy within ``tolerance``
    of its floor (and the forget images' top-rank share within ``retrieval_tolerance`` of its floor, when the curve
    has it); among them the best retain accuracy, ties to the smaller alpha."""
    floor = min(row[forget_key] for row in curve)
    admissible = [row for row in curve if row[forget_key] <= floor + tolerance]
    if retrieval_tolerance is not None and all(RETRIEVAL_KEY in row for row in curve):
        floor_r = min(row[RETRIEVAL_KEY] for row in admissible)
        admissible = [row for row in admissible if row[RETRIEVAL_KEY] <= floor_r + retrieval_tolerance]
    best = max(admissible, key=lambda row: (row[retain_key], -row["alpha"]))
    return float(best["alpha"])


def souped_tower(template: torch.nn.Module, theta_u: State, theta_0: State, alpha: float) -> torch.nn.Module:
    """A copy of ``template`` holding ``theta(alpha)``, in eval mode."""
    visual = copy.deepcopy(template)
    visual.load_state_dict(soup(theta_u, theta_0, alpha))
    return visual.eval()
