"""Encoder: uint8 image batches -> unit-norm embeddings, with exactly the forward pass the rest of clipforget uses."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clipforget.core.devices import resolve_device
from clipforget.models.encode import image_features
from clipforget.models.factory import ClipBundle, create_model


class ClipImageEncoder:
    """Wraps a :class:`ClipBundle`'s image tower (or another ``model`` with ``.visual``) as ``images -> embeddings``.

    Uses :func:`clipforget.models.encode.image_features` (its autocast: bf16 where native, channels-last), so index
    embeddings equal what zero-shot evaluation and the alpha grid compute for the same pixels.
    """

    def __init__(self, bundle: ClipBundle, model: nn.Module | None = None):
        self.bundle = bundle
        self.model = model or bundle.model
        self.model.eval()

    @classmethod
    def from_spec(cls, spec: str, device: str | None = None) -> ClipImageEncoder:
        return cls(create_model(spec, device=resolve_device(device)))

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
        return image_features(self.bundle, images, self.model).cpu().numpy()
