"""Fisher: Gaussian noise on the weights with a variance derived from the forget-set Fisher information.

Appendix A.1 computes the (diagonal, empirical) Fisher information ``F_i`` of every image-tower parameter on the
forget set and perturbs the weights with Gaussian noise whose variance comes from it, scaled by 0.2. The exact
mapping was lost in the paper's text; ours is scale-aware and bounded:

    theta_i <- theta_i + sqrt(variance_factor * F_i / max_{j in tensor} F_j) * std(tensor) * N(0, 1)

so the weights the forget images lean on most get noise of up to ``sqrt(variance_factor)`` times their tensor's
spread, and weights the forget set does not use are left (almost) alone. Noise magnitude grows as
``sqrt(variance_factor)``. Buffers (BatchNorm statistics) are untouched.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.methods.registry import MethodOutput, register
from clipforget.methods.training import frozen_state, trainable_copy, zs_logits
from clipforget.models.encode import text_classifier
from clipforget.models.factory import ClipBundle


@dataclass
class FisherConfig:
    variance_factor: float = 0.2  # the paper's value
    fisher_samples: int = 64  # forget images for the Fisher estimate
    micro_batch: int = 8
    seed: int = 0


def parameter_fisher(bundle: ClipBundle, visual: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
                     classifier: torch.Tensor, micro_batch: int) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: mean over micro-batches of the squared gradient of the zero-shot cross-entropy."""
    params = {n: p for n, p in visual.named_parameters() if p.requires_grad}
    totals = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    chunks = 0
    for start in range(0, len(images), micro_batch):
        loss = F.cross_entropy(zs_logits(bundle, visual, images[start : start + micro_batch], classifier),
                               targets[start : start + micro_batch].to(bundle.device))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), grads, strict=True):
            if g is not None:
                totals[name] += g.detach().float().pow(2)
        chunks += 1
    return {n: t / max(chunks, 1) for n, t in totals.items()}


def fisher_noise(fisher: dict[str, torch.Tensor], params: dict[str, torch.Tensor], variance_factor: float,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The noise of the module docstring for every parameter (same generator -> same direction for any factor)."""
    noise = {}
    for name, f in fisher.items():
        p = params[name]
        peak = f.max()
        relative = f / peak if peak > 0 else torch.zeros_like(f)
        spread = p.detach().float().std() if p.numel() > 1 else p.detach().float().abs().mean()
        z = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        noise[name] = (variance_factor * relative).sqrt() * spread * z.to(f.device)
    return noise


@register("fisher", FisherConfig, "Gaussian weight noise scaled by the forget-set Fisher information (factor 0.2)")
def fisher_forgetting(bundle: ClipBundle, task: UnlearningTask, cfg: FisherConfig,
                      progress: ProgressFn) -> MethodOutput:
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    visual = trainable_copy(bundle)
    idx = torch.from_numpy(rng.permutation(len(task.forget))[: cfg.fisher_samples])
    progress("fisher", 0.0, "Fisher information on the forget set")
    fisher = parameter_fisher(bundle, visual, task.forget.images[idx], task.label_ids(task.forget)[idx],
                              classifier, cfg.micro_batch)
    task.check_cancelled()
    params = dict(visual.named_parameters())
    noise = fisher_noise(fisher, params, cfg.variance_factor, torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        for name, n in noise.items():
            params[name].add_(n.to(params[name].dtype))
    progress("fisher", 1.0, "noise added")
    log = {"config": asdict(cfg), "noise_norm": float(torch.sqrt(sum(n.pow(2).sum() for n in noise.values()))),
           "fisher_top": sorted(((n, float(f.mean())) for n, f in fisher.items()), key=lambda x: -x[1])[:10]}
    return MethodOutput(frozen_state(visual), log, stage_seconds={"noise": time.perf_counter() - start})
