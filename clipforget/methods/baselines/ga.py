"""GA: gradient ascent on the zero-shot cross-entropy of the forget set (appendix A.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F

from ...models import ClipBundle
from ...task import ProgressFn, UnlearningTask, batches
from .. import MethodOutput, register
from .common import TrainConfig, frozen_state, num_steps, run_steps, start_training, zs_logits


@dataclass
class GAConfig(TrainConfig):
    lr: float = 1e-5  # ascent has no minimum: a smaller step than the descent baselines


@register("ga", GAConfig, "gradient ascent on the forget set (zero-shot cross-entropy, Adam)")
def gradient_ascent(bundle: ClipBundle, task: UnlearningTask, cfg: GAConfig, progress: ProgressFn) -> MethodOutput:
    training = start_training(bundle, task, cfg)
    rng, classifier, visual = training.rng, training.classifier, training.visual
    steps = num_steps(cfg, len(task.forget))
    stream = batches(task.forget, task.label_ids(task.forget), cfg.batch_size, rng, steps)

    def step(_: int) -> dict[str, float]:
        images, targets, _ = next(stream)
        ce = F.cross_entropy(zs_logits(bundle, visual, images, classifier), targets.to(bundle.device))
        training.descend(-ce)
        return {"forget_ce": ce.item()}

    losses, seconds = run_steps(task, "ga", steps, step, progress)
    return MethodOutput(frozen_state(visual), {"config": asdict(cfg), "steps": steps, "losses": losses},
                        stage_seconds={"train": seconds})
