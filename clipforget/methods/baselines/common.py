"""Shared pieces of the baselines: a trainable copy of the image tower, zero-shot losses, a step budget."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...layers import VisualOnly, clone_state
from ...models import ClipBundle
from ...task import ProgressFn, UnlearningTask
from ...zeroshot import autocast, image_features, logits, text_classifier


@dataclass
class TrainConfig:
    """Learning-based baselines: Adam with a small learning rate for up to ``epochs`` passes, capped in steps."""

    lr: float = 1e-4
    epochs: float = 2.0
    max_steps: int = 20  # keeps a run on the embedded model well under a minute on two CPU cores
    batch_size: int = 32
    seed: int = 0


def num_steps(cfg: TrainConfig, n_images: int) -> int:
    """``epochs`` passes over ``n_images`` in batches of ``batch_size``, at most ``max_steps``, at least one."""
    per_epoch = math.ceil(n_images / max(cfg.batch_size, 1))
    return max(1, min(cfg.max_steps, math.ceil(cfg.epochs * per_epoch)))


def trainable_copy(bundle: ClipBundle) -> nn.Module:
    """A deep copy of the original image tower, every float parameter trainable, in eval mode (BatchNorm frozen)."""
    visual = copy.deepcopy(bundle.model.visual)
    visual.eval()
    for p in visual.parameters():
        p.requires_grad_(p.is_floating_point())
    return visual


@dataclass
class Training:
    """What every gradient-based baseline starts from: seeded RNG, text classifier, trainable tower, Adam."""

    rng: np.random.Generator
    classifier: torch.Tensor
    visual: nn.Module
    opt: torch.optim.Optimizer

    def descend(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss``."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def start_training(bundle: ClipBundle, task: UnlearningTask, cfg: TrainConfig) -> Training:
    """Seed, build the zero-shot classifier over ``task.classnames`` and an Adam over a trainable tower copy."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    visual = trainable_copy(bundle)
    opt = torch.optim.Adam([p for p in visual.parameters() if p.requires_grad], lr=cfg.lr)
    return Training(rng, classifier, visual, opt)


def frozen_state(visual: nn.Module) -> dict[str, torch.Tensor]:
    for p in visual.parameters():
        p.requires_grad_(False)
    return clone_state(visual)


def zs_logits(bundle: ClipBundle, visual: nn.Module, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Zero-shot logits (logit scale times cosine similarity) of uint8 ``images``; differentiable."""
    return logits(bundle, image_features(bundle, images, VisualOnly(visual)), classifier)


def pixel_features(bundle: ClipBundle, visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm embeddings of float images in ``[0, 1]`` (``N,3,S,S``); differentiable w.r.t. pixels and weights."""
    cfg = bundle.config["preprocess_cfg"]
    mean = torch.tensor(cfg["mean"], device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=pixels.device).view(1, 3, 1, 1)
    x = ((pixels - mean) / std).contiguous(memory_format=torch.channels_last)
    with autocast(bundle):
        feats = visual(x)
    return F.normalize(feats.float(), dim=-1)


def forget_ids(task: UnlearningTask) -> list[int]:
    """Class indices of the forget set's labels (usually one coarse label)."""
    index = {c: i for i, c in enumerate(task.classnames)}
    return sorted({index[x] for x in task.forget.labels})


def run_steps(
    task: UnlearningTask,
    name: str,
    steps: int,
    step_fn: Callable[[int], dict[str, float]],
    progress: ProgressFn,
) -> tuple[list[dict[str, float]], float]:
    """Call ``step_fn(step)`` ``steps`` times with cancellation and progress; return (losses, seconds)."""
    start = time.perf_counter()
    losses = []
    for step in range(steps):
        task.check_cancelled()
        values = step_fn(step)
        losses.append(values)
        text = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        progress(name, (step + 1) / steps, f"step {step + 1}/{steps} {text}")
    return losses, time.perf_counter() - start
