"""CLIP-LIP: zero-shot class forgetting for CLIP (Kravets & Namboodiri), image-side variant.

Their method forgets a class without real data: (1) synthetic samples of the class are made from noise by gradient
ascent on its zero-shot likelihood in the original model; (2) a local Lipschitz loss (as in ``lip``) is minimised on
those samples -- in the original both towers, with the perturbed image as proxy for the text side; (3) only the few
layers with the largest gradient of that loss relative to their weights are updated; (4) steps repeat until the
synthetic samples are no longer recognised. Their later version keeps the neighbourhood of the other classes.

This image-side variant (the paper under test only unlearns the image tower) keeps all four parts on the image
tower: Lipschitz terms on embeddings and on image-text similarities (Eqs. 7-8) over noisy copies of the synthetic
forget samples, top-``top_layers`` parameter tensors by ``||grad|| / ||theta||``, early stop once the synthetic
forget accuracy reaches ``stop_accuracy``, and a retain term that keeps the embeddings of synthetic samples of the
other class names where the original model put them. It never looks at the real forget or retain images.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.methods.registry import MethodOutput, register
from clipforget.methods.training import forget_ids, frozen_state, run_steps, trainable_copy
from clipforget.models.encode import pixel_features, text_classifier
from clipforget.models.factory import ClipBundle

from .lip import lipschitz_loss


@dataclass
class CLIPLipConfig:
    synthetic: int = 32  # synthetic samples of the class(es) to forget
    synthetic_retain_per_class: int = 4  # synthetic samples of every other class name
    synth_steps: int = 40
    synth_lr: float = 0.05
    copies: int = 10
    noise_std: float = 0.1
    top_layers: int = 5
    lr: float = 1e-4
    max_steps: int = 20
    batch_size: int = 16
    retain_weight: float = 1.0
    stop_accuracy: float = 0.0
    seed: int = 0


def synthesize(bundle: ClipBundle, teacher: torch.nn.Module, classifier: torch.Tensor, targets: torch.Tensor,
               steps: int, lr: float, generator: torch.Generator) -> torch.Tensor:
    """Pixels in [0, 1] that the (frozen) ``teacher`` classifies as ``targets``, grown from uniform noise."""
    size = bundle.image_size
    pixels = torch.rand((len(targets), 3, size, size), generator=generator).to(bundle.device).requires_grad_(True)
    opt = torch.optim.Adam([pixels], lr=lr)
    scale = bundle.model.logit_scale.detach().exp().clamp(max=100.0)
    for _ in range(steps):
        logit = scale * pixel_features(bundle, teacher, pixels.clamp(0, 1)) @ classifier.T
        loss = F.cross_entropy(logit, targets.to(bundle.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return pixels.detach().clamp(0, 1)


@register("clip_lip", CLIPLipConfig,
          "Kravets & Namboodiri zero-shot class forgetting, image side: synthetic samples + Lipschitz, top layers")
def clip_lip(bundle: ClipBundle, task: UnlearningTask, cfg: CLIPLipConfig, progress: ProgressFn) -> MethodOutput:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    teacher = copy.deepcopy(bundle.model.visual).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    f_ids = forget_ids(task)
    r_ids = [i for i in range(len(task.classnames)) if i not in f_ids]
    progress("clip_lip", 0.0, "synthesising samples")
    f_targets = torch.tensor(f_ids).repeat(cfg.synthetic // len(f_ids) + 1)[: cfg.synthetic]
    r_targets = torch.tensor(r_ids, dtype=torch.long).repeat_interleave(cfg.synthetic_retain_per_class)
    synth_f = synthesize(bundle, teacher, classifier, f_targets, cfg.synth_steps, cfg.synth_lr, gen)
    synth_r = (synthesize(bundle, teacher, classifier, r_targets, cfg.synth_steps, cfg.synth_lr, gen)
               if len(r_targets) else None)
    with torch.no_grad():
        anchor_r = pixel_features(bundle, teacher, synth_r) if synth_r is not None else None
    task.check_cancelled()

    visual = trainable_copy(bundle)
    loss, _ = lipschitz_loss(bundle, visual, synth_f, classifier, cfg.copies, cfg.noise_std)
    named = [(n, p) for n, p in visual.named_parameters() if p.ndim >= 2]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    importance = sorted(
        ((n, float(g.norm() / p.detach().norm().clamp_min(1e-12))) for (n, p), g in zip(named, grads, strict=True)
         if g is not None), key=lambda x: -x[1])
    chosen = [n for n, _ in importance[: cfg.top_layers]]
    for n, p in visual.named_parameters():
        p.requires_grad_(n in chosen)
    opt = torch.optim.Adam([p for p in visual.parameters() if p.requires_grad], lr=cfg.lr)
    f_targets = f_targets.to(bundle.device)
    state = {"done": False}

    def step(i: int) -> dict[str, float]:
        if state["done"]:
            return {"skipped": 1.0}
        idx = torch.randint(len(synth_f), (min(cfg.batch_size, len(synth_f)),), generator=gen)
        lip, parts = lipschitz_loss(bundle, visual, synth_f[idx], classifier, cfg.copies, cfg.noise_std)
        total = lip
        keep = torch.zeros(())
        if synth_r is not None and cfg.retain_weight > 0:
            keep = (pixel_features(bundle, visual, synth_r) - anchor_r).pow(2).sum(-1).mean()
            total = lip + cfg.retain_weight * keep
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            acc = float(((pixel_features(bundle, visual, synth_f) @ classifier.T).argmax(1) == f_targets)
                        .float().mean())
        state["done"] = acc <= cfg.stop_accuracy
        return {"lipschitz": lip.item(), "retain": keep.item(), "synthetic_forget_acc": acc, **parts}

    losses, seconds = run_steps(task, "clip_lip", cfg.max_steps, step, progress)
    log = {"config": asdict(cfg), "layers": chosen, "importance": importance[:20],
           "losses": [x for x in losses if "skipped" not in x]}
    return MethodOutput(frozen_state(visual), log, stage_seconds={"train": seconds})
