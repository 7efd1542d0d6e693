"""GA: gradient ascent on the zero-shot cross-entropy of the forget set (appendix A.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.models.factory import ClipBundle

from ..registry import MethodOutput, register
from ..training import TrainConfig, train_tower


@dataclass
class GAConfig(TrainConfig):
    lr: float = 1e-5  # ascent has no minimum: a smaller step than the descent baselines


@register("ga", GAConfig, "gradient ascent on the forget set (zero-shot cross-entropy, Adam)")
def gradient_ascent(bundle: ClipBundle, task: UnlearningTask, cfg: GAConfig, progress: ProgressFn) -> MethodOutput:
    def step_loss(training, drawn):
        images, targets = drawn["forget"]
        ce = F.cross_entropy(training.logits(images), targets.to(bundle.device))
        return -ce, {"forget_ce": ce.item()}

    return train_tower(bundle, task, cfg, "ga", ("forget",), step_loss, progress)
