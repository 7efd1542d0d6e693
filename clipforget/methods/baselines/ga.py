"""GA: gradient ascent on the zero-shot cross-entropy of the forget set (appendix A.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...models import ClipBundle
from ...task import ProgressFn, UnlearningTask, batches
from ...zeroshot import text_classifier
from .. import MethodOutput, register
from .common import TrainConfig, frozen_state, num_steps, run_steps, trainable_copy, zs_logits


@dataclass
class GAConfig(TrainConfig):
    lr: float = 1e-5  # ascent has no minimum: a smaller step than the descent baselines


@register("ga", GAConfig, "gradient ascent on the forget set (zero-shot cross-entropy, Adam)")
def gradient_ascent(bundle: ClipBundle, task: UnlearningTask, cfg: GAConfig, progress: ProgressFn) -> MethodOutput:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    visual = trainable_copy(bundle)
    opt = torch.optim.Adam([p for p in visual.parameters() if p.requires_grad], lr=cfg.lr)
    steps = num_steps(cfg, len(task.forget))
    stream = batches(task.forget, task.label_ids(task.forget), cfg.batch_size, rng, steps)

    def step(_: int) -> dict[str, float]:
        images, targets, _ = next(stream)
        ce = F.cross_entropy(zs_logits(bundle, visual, images, classifier), targets.to(bundle.device))
        opt.zero_grad(set_to_none=True)
        (-ce).backward()
        opt.step()
        return {"forget_ce": ce.item()}

    losses, seconds = run_steps(task, "ga", steps, step, progress)
    return MethodOutput(frozen_state(visual), {"config": asdict(cfg), "steps": steps, "losses": losses},
                        stage_seconds={"train": seconds})
