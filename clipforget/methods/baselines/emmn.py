"""EMMN: error maximisation on the forget set and minimisation on the retain set, jointly (appendix A.1).

Each step takes one forget batch and one retain batch: ``loss = CE(retain) - forget_weight * CE(forget)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.models.factory import ClipBundle

from ..registry import MethodOutput, register
from ..training import TrainConfig, train_tower


@dataclass
class EMMNConfig(TrainConfig):
    forget_weight: float = 1.0


@register("emmn", EMMNConfig, "maximise the forget loss and minimise the retain loss jointly (Adam)")
def emmn(bundle: ClipBundle, task: UnlearningTask, cfg: EMMNConfig, progress: ProgressFn) -> MethodOutput:
    def step_loss(training, drawn):
        (f_images, f_targets), (r_images, r_targets) = drawn["forget"], drawn["retain"]
        ce_f = F.cross_entropy(training.logits(f_images), f_targets.to(bundle.device))
        ce_r = F.cross_entropy(training.logits(r_images), r_targets.to(bundle.device))
        return ce_r - cfg.forget_weight * ce_f, {"forget_ce": ce_f.item(), "retain_ce": ce_r.item()}

    return train_tower(bundle, task, cfg, "emmn", ("forget", "retain"), step_loss, progress)
