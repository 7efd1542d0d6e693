"""LIP: Lipschitz regularisation over noisy copies of the forget images (Foster et al., paper Eqs. 7-8).

For a forget image ``x`` and ``copies`` noisy versions ``x' = x + N(0, noise_std^2)`` (pixels in [0, 1]) the loss is

    ||f(x) - f(x')||_2 / ||x - x'||_2 + ||s(x) - s(x')||_2 / ||x - x'||_2

averaged over copies and images: ``f`` the unit-norm image embedding (Eq. 7) and ``s`` the vector of cosine
similarities to the task's class texts (Eq. 8). Minimising it flattens the tower around the forget images, which
erases what separates them. Adam, all image-tower weights, BatchNorm in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.models.encode import pixel_features
from clipforget.models.factory import ClipBundle

from ..registry import MethodOutput, register
from ..training import TrainConfig, train_tower


@dataclass
class LIPConfig(TrainConfig):
    copies: int = 10  # the paper's value
    noise_std: float = 0.1  # in [0, 1] pixel units
    batch_size: int = 8  # forget images per step (times 1 + copies forward passes)
    similarity_weight: float = 1.0


def lipschitz_loss(bundle: ClipBundle, visual: torch.nn.Module, pixels: torch.Tensor, classifier: torch.Tensor,
                   copies: int, noise_std: float, similarity_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Eqs. 7-8 on float ``pixels`` in [0, 1]: returns (loss, parts)."""
    n = len(pixels)
    noisy = pixels.unsqueeze(1) + noise_std * torch.randn((n, copies, *pixels.shape[1:]), device=pixels.device)
    feats = pixel_features(bundle, visual, torch.cat([pixels, noisy.flatten(0, 1).clamp(0, 1)]))
    clean, noisy_feats = feats[:n], feats[n:].view(n, copies, -1)
    delta_in = (noisy.clamp(0, 1) - pixels.unsqueeze(1)).flatten(2).norm(dim=-1).clamp_min(1e-6)
    emb = ((noisy_feats - clean.unsqueeze(1)).norm(dim=-1) / delta_in).mean()
    sims_clean, sims_noisy = clean @ classifier.T, noisy_feats @ classifier.T
    sim = ((sims_noisy - sims_clean.unsqueeze(1)).norm(dim=-1) / delta_in).mean()
    return emb + similarity_weight * sim, {"embedding": emb.item(), "similarity": sim.item()}


@register("lip", LIPConfig, "Lipschitz regularisation over 10 noisy copies of the forget images (Eqs. 7-8)")
def lip(bundle: ClipBundle, task: UnlearningTask, cfg: LIPConfig, progress: ProgressFn) -> MethodOutput:
    def step_loss(training, drawn):
        pixels = drawn["forget"][0].to(bundle.device).float() / 255.0
        loss, parts = lipschitz_loss(bundle, training.visual, pixels, training.classifier, cfg.copies,
                                     cfg.noise_std, cfg.similarity_weight)
        return loss, {"loss": loss.item(), **parts}

    return train_tower(bundle, task, cfg, "lip", ("forget",), step_loss, progress)
