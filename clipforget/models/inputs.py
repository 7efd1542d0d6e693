"""What an image tower's inputs are, for code that perturbs them (the remind stage's BatchNorm alignment).

:class:`PixelSpace`: uint8 images, perturbed as float pixels in ``[0, 1]`` with an absolute L-inf bound.
:class:`ActivationSpace`: cached prefix activations (:mod:`clipforget.models.prefix`), perturbed as floats with the
bound in units of each channel's standard deviation (docs/decisions.md D11).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class PixelSpace:
    kind = "pixels"

    def __init__(self, normalize_pixels: Callable[[torch.Tensor], torch.Tensor]):
        self.normalize_pixels = normalize_pixels

    def tower_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize_pixels(x.clamp(0, 1))

    def to_float(self, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
        return inputs.to(device).float() / 255.0

    def bound(self, x: torch.Tensor, epsilon: float) -> torch.Tensor:
        return torch.full((1,) * x.dim(), epsilon, device=x.device)

    def store(self, x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


class ActivationSpace:
    kind = "activations"

    def tower_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_float(self, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
        return inputs.to(device).float()

    def bound(self, x: torch.Tensor, epsilon: float) -> torch.Tensor:
        channel = 1 if x.dim() == 4 else x.dim() - 1  # N,C,H,W or N,L,D
        dims = [d for d in range(x.dim()) if d != channel]
        return epsilon * x.std(dim=dims, keepdim=True)

    def store(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(torch.float16).cpu()
