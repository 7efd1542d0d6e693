"""What an unlearning run works on (:class:`UnlearningTask`) and is judged on (:class:`EvalSet`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from clipforget.core.errors import DataError
from clipforget.core.progress import check_cancelled

from .images import ImageSet


@dataclass
class UnlearningTask:
    """Forget set (labelled with the coarse label to unlearn), retain set, zero-shot vocabulary, calibration sets."""

    forget: ImageSet
    retain: ImageSet
    classnames: list[str]
    calibration_forget: ImageSet | None = None
    calibration_retain: ImageSet | None = None
    name: str = "task"
    # texts the forget images must stop matching besides their label (e.g. the subgroup's own name); optional
    forget_prompts: tuple[str, ...] = ()
    # unlabelled images of what else the model must keep knowing (other datasets' training splits): distillation
    # targets only, in the forget stage's anchor and the remind stage's feature distillation (decisions D10)
    reference: ImageSet | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if len(self.forget) == 0:
            raise DataError("the forget set is empty: give at least one readable image to forget")
        if len(self.retain) == 0:
            raise DataError("the retain set is empty: give at least one readable image to keep")
        labels = set(self.forget.labels) | set(self.retain.labels)
        if any(not str(x).strip() for x in labels):
            raise DataError("every image needs a label text (the coarse label to forget, and the retain labels)")
        missing = labels - set(self.classnames)
        if missing:
            raise DataError(f"labels {sorted(missing)} are missing from the zero-shot classes {self.classnames}")
        if len(self.classnames) < 2:
            raise DataError("zero-shot classification needs at least two class names")

    def check_cancelled(self) -> None:
        check_cancelled(self.cancel)

    def label_ids(self, images: ImageSet) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.classnames)}
        return torch.tensor([index[x] for x in images.labels], dtype=torch.long)


@dataclass
class EvalSet:
    """A zero-shot evaluation set; ``role`` is ``target`` (to forget) or ``retain`` (to keep)."""

    name: str
    images: ImageSet
    classnames: list[str]
    role: str = "retain"


def batches(images: ImageSet, labels: torch.Tensor, batch_size: int, rng: np.random.Generator,
            steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """``steps`` shuffled mini-batches (epochs wrap around): (uint8 images, label ids, indices)."""
    n = len(images)
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + min(batch_size, n) > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos : pos + batch_size]
        pos += len(idx)
        yield images.images[torch.from_numpy(idx)], labels[torch.from_numpy(idx)], idx


def reference_batches(task: UnlearningTask, batch_size: int, rng: np.random.Generator,
                      steps: int) -> Iterator[torch.Tensor] | None:
    """``steps`` shuffled mini-batches of the task's reference images (uint8), or None when it has none."""
    if not task.reference:
        return None
    unlabelled = torch.zeros(len(task.reference), dtype=torch.long)
    return (images for images, _, _ in batches(task.reference, unlabelled, batch_size, rng, steps))
