"""FT: fine-tune the image tower on the retain set with the zero-shot cross-entropy (appendix A.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F

from ...models import ClipBundle
from ...task import ProgressFn, UnlearningTask, batches
from .. import MethodOutput, register
from .common import TrainConfig, frozen_state, num_steps, run_steps, start_training, zs_logits


@dataclass
class FTConfig(TrainConfig):
    pass


@register("ft", FTConfig, "fine-tune the image tower on the retain set (zero-shot cross-entropy, Adam)")
def finetune(bundle: ClipBundle, task: UnlearningTask, cfg: FTConfig, progress: ProgressFn) -> MethodOutput:
    training = start_training(bundle, task, cfg)
    rng, classifier, visual = training.rng, training.classifier, training.visual
    steps = num_steps(cfg, len(task.retain))
    stream = batches(task.retain, task.label_ids(task.retain), cfg.batch_size, rng, steps)

    def step(_: int) -> dict[str, float]:
        images, targets, _ = next(stream)
        loss = F.cross_entropy(zs_logits(bundle, visual, images, classifier), targets.to(bundle.device))
        training.descend(loss)
        return {"retain_ce": loss.item()}

    losses, seconds = run_steps(task, "ft", steps, step, progress)
    return MethodOutput(frozen_state(visual), {"config": asdict(cfg), "steps": steps, "losses": losses},
                        stage_seconds={"train": seconds})
