"""SLUG: single layer, single gradient step (Cai et al., 2024), on the zero-shot losses of the task.

1. One gradient of the forget loss (zero-shot cross-entropy of the forget images, to be *raised*) and one of the
   retain loss, on ``gradient_samples`` images each.
2. Every weight tensor (conv / linear / attention-pool projection) gets an importance ``||g_f|| / ||theta||`` and a
   retain alignment ``|cos(g_f, g_r)|``; the candidates are the Pareto front (high importance, low alignment).
3. For the ``max_layers`` most important front layers and each relative step size ``lam`` the single update
   ``theta_l + lam * ||theta_l|| * g_f / ||g_f||`` is scored on the calibration sets by
   ``(1 - forget_ratio) + retain_ratio`` (the Score's two sides); the best (layer, lam) wins, ties to smaller steps.
   SLUG binary-searches ``lam``; a grid is the same search made explicit and logged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.evaluation import ratio, zero_shot_accuracy
from clipforget.methods.registry import MethodOutput, register
from clipforget.methods.training import frozen_state, trainable_copy, zs_logits
from clipforget.models.encode import text_classifier
from clipforget.models.factory import ClipBundle
from clipforget.models.layers import VisualOnly


@dataclass
class SLUGConfig:
    gradient_samples: int = 64
    micro_batch: int = 16
    step_sizes: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    max_layers: int = 5
    calibration_images: int = 128  # per calibration set
    seed: int = 0


def full_gradient(bundle: ClipBundle, visual: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
                  classifier: torch.Tensor, names: list[str], micro_batch: int) -> dict[str, torch.Tensor]:
    params = dict(visual.named_parameters())
    total = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    for start in range(0, len(images), micro_batch):
        chunk = images[start : start + micro_batch]
        loss = F.cross_entropy(zs_logits(bundle, visual, chunk, classifier),
                               targets[start : start + micro_batch].to(bundle.device), reduction="sum")
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                total[n] += g.float()
    return {n: g / len(images) for n, g in total.items()}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated when maximising the first value and minimising the second."""
    front = []
    for name, (imp, align) in points.items():
        dominated = any((o_imp >= imp and o_align <= align) and (o_imp > imp or o_align < align)
                        for other, (o_imp, o_align) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: -points[n][0])


@register("slug", SLUGConfig, "single layer single gradient step on the importance/alignment Pareto front")
def slug(bundle: ClipBundle, task: UnlearningTask, cfg: SLUGConfig, progress: ProgressFn) -> MethodOutput:
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    visual = trainable_copy(bundle)
    names = [n for n, p in visual.named_parameters() if p.ndim >= 2]

    def sample(images, n):
        return images.subset(torch.from_numpy(rng.permutation(len(images))[:n]))

    forget, retain = sample(task.forget, cfg.gradient_samples), sample(task.retain, cfg.gradient_samples)
    progress("slug", 0.0, "forget and retain gradients")
    g_f = full_gradient(bundle, visual, forget.images, task.label_ids(forget), classifier, names, cfg.micro_batch)
    g_r = full_gradient(bundle, visual, retain.images, task.label_ids(retain), classifier, names, cfg.micro_batch)
    params = dict(visual.named_parameters())
    points = {n: (float(g_f[n].norm() / params[n].detach().norm().clamp_min(1e-12)),
              float(F.cosine_similarity(g_f[n].flatten(), g_r[n].flatten(), dim=0).abs()))
              for n in names if g_f[n].norm() > 0}
    front = pareto_front(points)[: cfg.max_layers]
    task.check_cancelled()

    cal_f = sample(task.calibration_forget or task.forget, cfg.calibration_images)
    cal_r = sample(task.calibration_retain or task.retain, cfg.calibration_images)
    wrapper = VisualOnly(visual)

    def accuracies() -> tuple[float, float]:
        return (zero_shot_accuracy(bundle, cal_f, task.classnames, wrapper, classifier),
                zero_shot_accuracy(bundle, cal_r, task.classnames, wrapper, classifier))

    f0, r0 = accuracies()
    trials, best = [], None
    total = max(len(front) * len(cfg.step_sizes), 1)
    with torch.no_grad():
        for li, name in enumerate(front):
            p = params[name]
            original = p.detach().clone()
            direction = g_f[name] / g_f[name].norm() * original.float().norm()
            for si, lam in enumerate(sorted(cfg.step_sizes)):
                task.check_cancelled()
                p.copy_((original.float() + lam * direction).to(p.dtype))
                f_acc, r_acc = accuracies()
                value = (1.0 - ratio(f_acc, f0)) + ratio(r_acc, r0)
                trials.append({"layer": name, "step": lam, "forget_acc": f_acc, "retain_acc": r_acc, "value": value})
                if best is None or value > best["value"] + 1e-9:
                    best = trials[-1]
                progress("slug", (li * len(cfg.step_sizes) + si + 1) / total, f"{name} step {lam}: {value:.3f}")
            p.copy_(original)
        if best is not None:
            p = params[best["layer"]]
            direction = g_f[best["layer"]] / g_f[best["layer"]].norm() * p.detach().float().norm()
            p.add_((best["step"] * direction).to(p.dtype))
    log = {"config": asdict(cfg), "calibration_original": {"forget_acc": f0, "retain_acc": r0},
           "pareto_front": [{"layer": n, "importance": points[n][0], "alignment": points[n][1]} for n in front],
           "chosen": best, "trials": trials}
    return MethodOutput(frozen_state(visual), log, stage_seconds={"search": time.perf_counter() - start})
