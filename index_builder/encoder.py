"""Encoder: uint8 image batches -> unit-norm embeddings, with exactly the forward pass the rest of clipforget uses."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clipforget.core.devices import resolve_device
from clipforget.models.encode import tower_features
from clipforget.models.factory import ClipBundle, create_model
from clipforget.models.fold import checked_fold, probe_input


class ClipImageEncoder:
    """Wraps a :class:`ClipBundle`'s image tower as ``images -> embeddings``.

    Uses :func:`clipforget.models.encode.tower_features` (its autocast: bf16 where native, channels-last). With
    ``fold_batchnorm`` (the default) it runs :func:`clipforget.models.fold.checked_fold`'s copy of the tower, each
    BatchNorm merged into its convolution: the same function with less work per image, but rounded differently under
    bf16, so an index records it (``batchnorm_folded``) and its alpha grids fold the same way (docs/decisions.md D21).
    :attr:`tower` is the module that runs (hooks that collect activations go there).
    """

    def __init__(self, bundle: ClipBundle, fold_batchnorm: bool = True):
        self.bundle = bundle
        bundle.model.eval()
        folded = checked_fold(bundle.model.visual, probe_input(bundle.example_input())) if fold_batchnorm else None
        self.batchnorm_folded = folded is not None
        self.tower: nn.Module = folded if folded is not None else bundle.model.visual

    @classmethod
    def from_spec(cls, spec: str, device: str | None = None, fold_batchnorm: bool = True) -> ClipImageEncoder:
        return cls(create_model(spec, device=resolve_device(device)), fold_batchnorm=fold_batchnorm)

    @property
    def dim(self) -> int:
        return self.bundle.embed_dim

    @property
    def image_size(self) -> int:
        return self.bundle.image_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """uint8 ``B,3,S,S`` -> float32 ``B,D`` unit-norm embeddings (numpy, on the CPU)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return tower_features(self.bundle, self.tower, self.bundle.normalize(images)).cpu().numpy()
