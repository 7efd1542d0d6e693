"""Stage 2, reminding: align retain images to the pre-training statistics, then distil from the original model.

Alignment perturbs retain images so the features entering every BatchNorm match its running statistics (Eq. 4);
fine-tuning distils logits and embeddings from the original, keeps the bounded forget term, and returns an EMA that
starts at the original weights (Eq. 5). Choices and measurements: docs/decisions.md D3.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipforget.core.progress import ProgressFn, check_cancelled, no_progress
from clipforget.data.images import ImageSet
from clipforget.data.task import UnlearningTask, batches, reference_batches
from clipforget.models.encode import autocast, image_features, logits, text_classifier
from clipforget.models.factory import ClipBundle
from clipforget.models.layers import VisualOnly

from .forget import ForgetConfig, ForgetLoss


@dataclass
class RemindConfig:
    align: bool = True
    align_images: int = 512  # retain images that get a perturbation (the fine-tuning pool)
    align_batch: int = 128  # images whose BN statistics are matched together
    # pixel space only: images through the whole tower at once; the batch's statistics and gradient stay exact
    # (decisions D3). RN50 at 224 px holds ~150 MB of activations an image: 128 at once did not fit in 24 GB
    align_micro_batch: int = 32
    align_steps: int = 20
    align_lr: float = 0.01
    epsilon: float = 16 / 255  # L-inf bound of the perturbation, in [0, 1] pixel units
    # the bound when the inputs are cached prefix activations, in channel standard deviations (decisions D11)
    activation_epsilon: float = 0.5
    steps: int = 80  # fine-tuning steps (paper Tab. 4: 20 on RN50; decisions D10)
    batch_size: int = 64
    lr: float = 1e-3
    kd_weight: float = 1.0
    kd_temperature: float = 2.0
    feature_kd_weight: float = 20.0  # embedding distillation ``1 - cos(f_student(x), f_orig(x))`` (decisions D3)
    ema_decay: float = 0.9
    forget_weight: float = 1.0  # keep the bounded forget loss on forget images while reminding (decisions D3)
    seed: int = 0


def batchnorm_layers(visual: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in visual.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BNStatistics:
    """Forward pre-hooks on every BatchNorm layer: the batch mean / variance entering each (:meth:`mismatch`), or,
    for a batch too large to back-propagate at once, its statistics gathered over micro-batches (:meth:`gather`) and
    then back-propagated one micro-batch at a time with the whole batch's gradient (:meth:`backward_in_slices`)."""

    def __init__(self, visual: nn.Module):
        self.layers = batchnorm_layers(visual)
        self.stats: list = []
        self._mode = "batch"
        self._centre: list[torch.Tensor] = []
        self._grads: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._count = 0
        self._hooks = [m.register_forward_pre_hook(self._hook) for _, m in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].float()
        if self._mode == "batch":
            self.stats.append((x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)))
        elif self._mode == "gather":
            self.stats.append((x.shape[0] * x.shape[2] * x.shape[3], x.mean(dim=(0, 2, 3)).double(),
                               x.var(dim=(0, 2, 3), unbiased=False).double()))
        else:  # d mean / dx = 1/n and d var / dx = 2 (x - mean) / n: the whole batch's gradient, a slice at a time
            i = len(self.stats)
            mean, (g_mean, g_var) = self._centre[i], self._grads[i]
            n = self._count * x.shape[2] * x.shape[3]
            self.stats.append(((g_mean * x.sum(dim=(0, 2, 3))).sum() + (g_var * (x - mean[:, None, None]).pow(2)
                                                                          .sum(dim=(0, 2, 3))).sum()) / n)

    def _loss(self, means: list[torch.Tensor], variances: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for (_, bn), mean, var in zip(self.layers, means, variances, strict=True):
            total = total + torch.linalg.vector_norm(mean - bn.running_mean) \
                + torch.linalg.vector_norm(var - bn.running_var)
        return total

    def mismatch(self) -> torch.Tensor:
        """``sum_l ||mu_l - running_mean_l|| + ||var_l - running_var_l||`` of the last forward pass."""
        stats, self.stats = self.stats, []
        return self._loss([m for m, _ in stats], [v for _, v in stats])

    def gather(self, forward: Callable[[int, int], object], bounds: list[tuple[int, int]]) -> float:
        """The mismatch of a batch run through ``forward(start, stop)`` one slice at a time without gradients;
        keeps what :meth:`backward_in_slices` needs."""
        layers = len(self.layers)
        self._mode, self.stats = "gather", []
        try:
            with torch.no_grad():
                for start, stop in bounds:
                    forward(start, stop)
            per_layer = [self.stats[i::layers] for i in range(layers)]  # the hooks ran layer by layer, slice by slice
        finally:
            self._mode, self.stats = "batch", []
        means, variances = [], []
        for parts in per_layer:  # the pooled mean and (biased) variance of the slices (Chan et al.)
            n = sum(c for c, _, _ in parts)
            mean = sum(c * m for c, m, _ in parts) / n
            means.append(mean.float().requires_grad_())
            variances.append((sum(c * (v + (m - mean) ** 2) for c, m, v in parts) / n).float().requires_grad_())
        loss = self._loss(means, variances)
        loss.backward()
        self._centre = [m.detach() for m in means]
        self._grads = [(m.grad, v.grad) for m, v in zip(means, variances, strict=True)]
        self._count = bounds[-1][1] - bounds[0][0]
        return float(loss.detach())

    def backward_in_slices(self, forward: Callable[[int, int], object], bounds: list[tuple[int, int]]) -> None:
        """Back-propagate the mismatch that :meth:`gather` measured, a slice at a time: each slice's surrogate
        has that slice's share of the whole batch's gradient, so the inputs' gradients equal one pass's."""
        self._mode = "surrogate"
        try:
            for start, stop in bounds:
                self.stats = []
                forward(start, stop)
                sum(self.stats, torch.zeros(())).backward()
        finally:
            self._mode, self.stats = "batch", []

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def bn_mismatch(bundle: ClipBundle, visual: nn.Module, images: torch.Tensor) -> float:
    """The alignment loss of a batch under ``visual`` (no perturbation)."""
    stats = BNStatistics(visual)
    try:
        with torch.no_grad():
            visual(bundle.normalize(images))
        return float(stats.mismatch())
    finally:
        stats.close()


def _perturbed_forward(bundle: ClipBundle, visual: nn.Module, x: torch.Tensor, delta: torch.Tensor, start: int,
                       stop: int) -> None:
    with autocast(bundle):
        visual(bundle.input_space.tower_input(x[start:stop] + delta[start:stop]))


def align_to_bn_statistics(bundle: ClipBundle, visual: nn.Module, images: torch.Tensor, cfg: RemindConfig, cancel=None,
                           progress: ProgressFn = no_progress) -> tuple[torch.Tensor, dict]:
    """Perturb ``images`` (the tower's inputs: uint8 pixels, or cached prefix activations) so their BN input
    statistics in ``visual`` match the running statistics; the L-inf bound is ``cfg.epsilon`` in pixel units or
    ``cfg.activation_epsilon`` channel standard deviations (:mod:`clipforget.models.inputs`, decisions D11)."""
    if not batchnorm_layers(visual):
        return images, {"aligned": False, "reason": "model has no BatchNorm layers; alignment skipped"}
    space = bundle.input_space
    epsilon = cfg.epsilon if space.kind == "pixels" else cfg.activation_epsilon
    # cached activations enter only the tower's later, smaller stages: their batch fits in one pass
    micro = cfg.align_micro_batch if space.kind == "pixels" else cfg.align_batch
    visual.eval()
    flags = [p.requires_grad for p in visual.parameters()]
    for p in visual.parameters():
        p.requires_grad_(False)  # gradients flow to the perturbation only
    stats = BNStatistics(visual)
    out, before, after = [], [], []
    try:
        for start in range(0, len(images), cfg.align_batch):
            x = space.to_float(images[start : start + cfg.align_batch], bundle.device)
            bound = space.bound(x, epsilon)
            delta = torch.zeros_like(x, requires_grad=True)
            # the same step relative to the bound in both spaces
            opt = torch.optim.Adam([delta], lr=cfg.align_lr / cfg.epsilon * float(bound.mean()))
            bounds = [(a, min(a + micro, len(x))) for a in range(0, len(x), micro)]
            forward = functools.partial(_perturbed_forward, bundle, visual, x, delta)
            for step in range(cfg.align_steps + 1):
                check_cancelled(cancel)
                last = step == cfg.align_steps
                if len(bounds) == 1:
                    forward(0, len(x))
                    loss = stats.mismatch()
                    value = float(loss.detach())
                else:
                    value = stats.gather(forward, bounds)
                if step == 0:
                    before.append(value)
                elif last:
                    after.append(value)
                    break
                opt.zero_grad(set_to_none=True)
                if len(bounds) == 1:
                    loss.backward()
                else:
                    stats.backward_in_slices(forward, bounds)
                opt.step()
                with torch.no_grad():
                    delta.copy_(torch.maximum(torch.minimum(delta, bound), -bound))
            out.append(space.store(x + delta.detach()))
            done = min(start + cfg.align_batch, len(images))
            # the first half of the stage's bar; on a large tower this step takes minutes
            progress("remind", 0.5 * done / len(images),
                     f"aligning retain images to the BatchNorm statistics: {done}/{len(images)} images")
    finally:
        stats.close()
        for p, flag in zip(visual.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return torch.cat(out), {"aligned": True, "space": space.kind, "mismatch_before": float(np.mean(before)),
                            "mismatch_after": float(np.mean(after))}


def ema_update(ema: dict[str, torch.Tensor], current: dict[str, torch.Tensor], decay: float,
               keys: list[str] | None = None) -> None:
    """``ema <- decay * ema + (1 - decay) * current`` for float entries (only ``keys`` if given), in place.

    Entries that are never trained stay bit-identical to the original, so weight-space diffs (alpha grids) see
    exactly the layers the method changed.
    """
    with torch.no_grad():
        for key in keys if keys is not None else list(current):
            value = current[key]
            if value.is_floating_point():
                ema[key].mul_(decay).add_(value.detach().to(ema[key].dtype), alpha=1.0 - decay)


def fine_tuning_pool(bundle: ClipBundle, teacher: nn.Module, task: UnlearningTask, cfg: RemindConfig,
                     rng: np.random.Generator, progress: ProgressFn = no_progress) -> tuple[ImageSet, dict]:
    """``cfg.align_images`` retain images drawn with ``rng``, aligned to the BatchNorm statistics (Eq. 4) unless
    ``cfg.align`` is off."""
    pool = task.retain.subset(rng.permutation(len(task.retain))[: cfg.align_images])
    if not cfg.align:
        return pool, {"aligned": False, "reason": "disabled by config"}
    if not batchnorm_layers(teacher):  # a ViT: said once here, the run goes on with the images as they are
        progress("remind", 0.0, "no BatchNorm layers in this image tower: the alignment (Eq. 4) is skipped")
    else:
        progress("remind", 0.0, "aligning retain images to the BatchNorm statistics")
    aligned, log = align_to_bn_statistics(bundle, teacher, pool.images, cfg, task.cancel, progress)
    return ImageSet(aligned, pool.labels, pool.paths), log


def remind(bundle: ClipBundle, unlearned_visual: nn.Module, task: UnlearningTask, trainable_layers: list[str],
           cfg: RemindConfig | None = None, progress: ProgressFn = no_progress,
           forget_cfg: ForgetConfig | None = None) -> tuple[nn.Module, dict]:
    """Return (the EMA image tower, stage log). ``bundle.model`` is the original (teacher) model."""
    cfg = cfg or RemindConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    teacher = bundle.model.visual
    teacher.eval()
    log: dict = {"config": asdict(cfg)}
    pool, log["alignment"] = fine_tuning_pool(bundle, teacher, task, cfg, rng, progress)
    task.check_cancelled()

    classifier = text_classifier(bundle, task.classnames)
    objective = ForgetLoss(bundle, task, classifier, forget_cfg or ForgetConfig())
    student = copy.deepcopy(unlearned_visual)
    student.eval()
    modules = dict(student.named_modules())
    trainable = []
    for p in student.parameters():
        p.requires_grad_(False)
    for name in trainable_layers:
        for p in modules[name].parameters(recurse=False):
            p.requires_grad_(True)
            trainable.append(p)
    ema = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    trained_keys = [k for k in ema if k.rsplit(".", 1)[0] in set(trainable_layers)]
    opt = torch.optim.Adam(trainable, lr=cfg.lr)
    labels = task.label_ids(pool)
    wrapper, teacher_wrap = VisualOnly(student), VisualOnly(teacher)
    forget_labels = task.label_ids(task.forget)
    forget_batches = batches(task.forget, forget_labels, cfg.batch_size, rng, cfg.steps)
    references = reference_batches(task, cfg.batch_size, rng, cfg.steps)
    losses = []
    for step, (images, targets, _) in enumerate(batches(pool, labels, cfg.batch_size, rng, cfg.steps)):
        task.check_cancelled()
        forget_images, forget_targets, _ = next(forget_batches)
        with torch.no_grad():
            teacher_feats = image_features(bundle, images, teacher_wrap)
            teacher_logits = logits(bundle, teacher_feats, classifier)
        student_feats = image_features(bundle, images, wrapper)
        student_logits = logits(bundle, student_feats, classifier)
        ce = F.cross_entropy(student_logits, targets.to(student_logits.device))
        t = cfg.kd_temperature
        kd = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1), log_target=True,
                      reduction="batchmean") * t * t
        loss = ce + cfg.kd_weight * kd
        if cfg.feature_kd_weight > 0:
            feature_kd = (1.0 - (student_feats * teacher_feats).sum(-1)).mean()
            loss = loss + cfg.feature_kd_weight * feature_kd
        anchor = objective.anchor_term(student_feats, teacher_feats)
        if references is not None:  # what else the model knows: feature distillation + anchor, no labels
            reference = next(references)
            with torch.no_grad():
                reference_teacher = image_features(bundle, reference, teacher_wrap)
            reference_student = image_features(bundle, reference, wrapper)
            feature_gap = (1.0 - (reference_student * reference_teacher).sum(-1)).mean()
            loss = loss + cfg.feature_kd_weight * feature_gap
            anchor = anchor + objective.anchor_term(reference_student, reference_teacher)
        loss = loss + anchor
        keep_forgotten = torch.zeros(())
        if cfg.forget_weight > 0:
            forget_feats = image_features(bundle, forget_images, wrapper)
            keep_forgotten = objective.forget_term(forget_feats, forget_targets)
            loss = loss + cfg.forget_weight * keep_forgotten
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, student.state_dict(), cfg.ema_decay, trained_keys)
        losses.append({"ce": float(ce.detach()), "kd": float(kd.detach()), "forget": float(keep_forgotten.detach()),
                       "anchor": float(anchor.detach())})
        progress("remind", 0.5 + 0.5 * (step + 1) / cfg.steps, f"step {step + 1}/{cfg.steps} ce {losses[-1]['ce']:.3f}")
    student.load_state_dict(ema)
    for p in student.parameters():
        p.requires_grad_(False)
    log["losses"] = losses
    return student, log
