"""FT: fine-tune the image tower on the retain set with the zero-shot cross-entropy (appendix A.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.models.factory import ClipBundle

from ..registry import MethodOutput, register
from ..training import TrainConfig, train_tower


@dataclass
class FTConfig(TrainConfig):
    pass


@register("ft", FTConfig, "fine-tune the image tower on the retain set (zero-shot cross-entropy, Adam)")
def finetune(bundle: ClipBundle, task: UnlearningTask, cfg: FTConfig, progress: ProgressFn) -> MethodOutput:
    def step_loss(training, drawn):
        images, targets = drawn["retain"]
        loss = F.cross_entropy(training.logits(images), targets.to(bundle.device))
        return loss, {"retain_ce": loss.item()}

    return train_tower(bundle, task, cfg, "ft", ("retain",), step_loss, progress)
