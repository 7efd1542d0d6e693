"""Merging unlearned models for continual forgetting (the paper's Tab. 6): forget classes one at a time, then merge."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipforget.core.progress import ProgressFn, no_progress
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.evaluation import per_class_accuracy
from clipforget.methods.ours import ThreeStageConfig
from clipforget.methods.registry import seed_config
from clipforget.models.factory import ClipBundle, load_checkpoint
from clipforget.models.weights import clone_state, merge_states
from clipforget.settings import get_setting

from .ablations import done_or_run


@dataclass
class MergeResult:
    rows: list[dict] = field(default_factory=list)  # {"model": "S+A", "mode": "mean", <class>: acc, ...}


def continual_merge(bundle: ClipBundle, out_dir: str | os.PathLike,
                    classes: Sequence[str] = ("ship", "airplane", "cat"), seed: int = 0, size: str = "small",
                    modes: Sequence[str] = ("mean", "sum"), eval_per_class: int = 100,
                    progress: ProgressFn = no_progress) -> MergeResult:
    """Forget each class with ``ours`` alone, then merge the final models cumulatively (S, S+A, S+A+C)."""
    out = Path(out_dir)
    test = cifar10("test", bundle.image_size, None, eval_per_class, 0)
    names = list(CIFAR10_CLASSES)
    result = MergeResult([{"model": "Original", "mode": "-", **per_class_accuracy(bundle, None, test, names)}])
    states, theta_0 = [], clone_state(bundle.model.visual)
    visual = copy.deepcopy(bundle.model.visual).eval()
    for cls in classes:
        task, eval_sets = get_setting("cifar10").build(bundle.image_size, seed, size, forget_class=cls)
        cfg = ThreeStageConfig()
        seed_config(cfg, seed)
        run_dir = out / f"forget-{cls}"
        done_or_run(bundle, task, run_dir, "ours", cfg, eval_sets, progress, {"seed": seed, "ablation": "merge"})
        state = load_checkpoint(run_dir / "model").visual_state()
        states.append(state)
        visual.load_state_dict(state)
        result.rows.append({"model": cls[0].upper(), "mode": "-", **per_class_accuracy(bundle, visual, test, names)})
    for k in range(2, len(states) + 1):
        label = "+".join(c[0].upper() for c in classes[:k])
        for mode in modes:
            visual.load_state_dict(merge_states(states[:k], theta_0, mode))
            result.rows.append({"model": label, "mode": mode, **per_class_accuracy(bundle, visual, test, names)})
    return result
