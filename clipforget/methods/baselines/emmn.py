"""EMMN: error maximisation on the forget set and minimisation on the retain set, jointly (appendix A.1).

Each step takes one forget batch and one retain batch: ``loss = CE(retain) - forget_weight * CE(forget)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F

from ...models import ClipBundle
from ...task import ProgressFn, UnlearningTask, batches
from .. import MethodOutput, register
from .common import TrainConfig, frozen_state, num_steps, run_steps, start_training, zs_logits


@dataclass
class EMMNConfig(TrainConfig):
    forget_weight: float = 1.0


@register("emmn", EMMNConfig, "maximise the forget loss and minimise the retain loss jointly (Adam)")
def emmn(bundle: ClipBundle, task: UnlearningTask, cfg: EMMNConfig, progress: ProgressFn) -> MethodOutput:
    training = start_training(bundle, task, cfg)
    rng, classifier, visual = training.rng, training.classifier, training.visual
    steps = num_steps(cfg, max(len(task.forget), len(task.retain)))
    forget_stream = batches(task.forget, task.label_ids(task.forget), cfg.batch_size, rng, steps)
    retain_stream = batches(task.retain, task.label_ids(task.retain), cfg.batch_size, rng, steps)

    def step(_: int) -> dict[str, float]:
        f_images, f_targets, _ = next(forget_stream)
        r_images, r_targets, _ = next(retain_stream)
        ce_f = F.cross_entropy(zs_logits(bundle, visual, f_images, classifier), f_targets.to(bundle.device))
        ce_r = F.cross_entropy(zs_logits(bundle, visual, r_images, classifier), r_targets.to(bundle.device))
        training.descend(ce_r - cfg.forget_weight * ce_f)
        return {"forget_ce": ce_f.item(), "retain_ce": ce_r.item()}

    losses, seconds = run_steps(task, "emmn", steps, step, progress)
    return MethodOutput(frozen_state(visual), {"config": asdict(cfg), "steps": steps, "losses": losses},
                        stage_seconds={"train": seconds})
