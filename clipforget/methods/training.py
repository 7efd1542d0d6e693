"""What the gradient-based baselines share: a trainable copy of the image tower, zero-shot logits, a step budget and
one training loop (:func:`train_tower`) that each baseline feeds with its own loss."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask, batches
from clipforget.models.encode import image_features, logits, text_classifier
from clipforget.models.factory import ClipBundle
from clipforget.models.layers import VisualOnly
from clipforget.models.weights import State, clone_state

from .registry import MethodOutput


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


def frozen_state(visual: nn.Module) -> State:
    for p in visual.parameters():
        p.requires_grad_(False)
    return clone_state(visual)


def zs_logits(bundle: ClipBundle, visual: nn.Module, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Zero-shot logits (logit scale times cosine similarity) of uint8 ``images``; differentiable."""
    return logits(bundle, image_features(bundle, images, VisualOnly(visual)), classifier)


def forget_ids(task: UnlearningTask) -> list[int]:
    """Class indices of the forget set's labels (usually one coarse label)."""
    index = {c: i for i, c in enumerate(task.classnames)}
    return sorted({index[x] for x in task.forget.labels})


@dataclass
class Training:
    """What a gradient-based baseline trains: the bundle, its text classifier, a trainable tower and its Adam."""

    bundle: ClipBundle
    rng: np.random.Generator
    classifier: torch.Tensor
    visual: nn.Module
    opt: torch.optim.Optimizer

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return zs_logits(self.bundle, self.visual, images, self.classifier)

    def descend(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss``."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def run_steps(task: UnlearningTask, name: str, steps: int, step_fn: Callable[[int], dict[str, float]],
              progress: ProgressFn) -> tuple[list[dict[str, float]], float]:
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


# step_loss(training, {"forget": (images, label ids), "retain": ...}) -> (loss to descend, values to log)
StepLoss = Callable[[Training, dict[str, tuple[torch.Tensor, torch.Tensor]]], tuple[torch.Tensor, dict[str, float]]]


def train_tower(bundle: ClipBundle, task: UnlearningTask, cfg: TrainConfig, name: str, sources: Sequence[str],
                step_loss: StepLoss, progress: ProgressFn) -> MethodOutput:
    """The baselines' loop: every step draws one batch from each of ``sources`` (``"forget"`` / ``"retain"``),
    descends ``step_loss`` on a trainable copy of the tower, and returns its final state."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    visual = trainable_copy(bundle)
    opt = torch.optim.Adam([p for p in visual.parameters() if p.requires_grad], lr=cfg.lr)
    training = Training(bundle, rng, classifier, visual, opt)
    sets = {source: getattr(task, source) for source in sources}
    steps = num_steps(cfg, max(len(s) for s in sets.values()))
    streams = {k: batches(s, task.label_ids(s), cfg.batch_size, training.rng, steps) for k, s in sets.items()}

    def step(_: int) -> dict[str, float]:
        drawn = {k: next(stream)[:2] for k, stream in streams.items()}
        loss, values = step_loss(training, drawn)
        training.descend(loss)
        return values

    losses, seconds = run_steps(task, name, steps, step, progress)
    return MethodOutput(frozen_state(training.visual), {"config": asdict(cfg), "steps": steps, "losses": losses},
                        stage_seconds={"train": seconds})
