"""FT: fine-tune the image tower on the retain set with the zero-shot cross-entropy (appendix A.1)."""

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
class FTConfig(TrainConfig):
    pass


@register("ft", FTConfig, "fine-tune the image tower on the retain set (zero-shot cross-entropy, Adam)")
def finetune(bundle: ClipBundle, task: UnlearningTask, cfg: FTConfig, progress: ProgressFn) -> MethodOutput:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    visual = trainable_copy(bundle)
    opt = torch.optim.Adam([p for p in visual.parameters() if p.requires_grad], lr=cfg.lr)
    steps = num_steps(cfg, len(task.retain))
    stream = batches(task.retain, task.label_ids(task.retain), cfg.batch_size, rng, steps)

    def step(_: int) -> dict[str, float]:
        images, targets, _ = next(stream)
        loss = F.cross_entropy(zs_logits(bundle, visual, images, classifier), targets.to(bundle.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"retain_ce": loss.item()}

    losses, seconds = run_steps(task, "ft", steps, step, progress)
    return MethodOutput(frozen_state(visual), {"config": asdict(cfg), "steps": steps, "losses": losses},
                        stage_seconds={"train": seconds})
