"""Layer bookkeeping shared by the stages: which modules are adaptable, and weight-space arithmetic."""

from __future__ import annotations

import torch
from torch import nn


def adaptable_layers(visual: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the Conv2d / Linear modules whose ``forward`` actually runs on ``example``.

    open_clip's AttentionPool2d reads its q/k/v/c projections' weights directly, so LoRA wrapping them would
    silently do nothing; running one forward pass and keeping only called modules rules such layers out.
    """
    called: list[str] = []
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
        for name, module in visual.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            visual(example)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(called))


def clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def interpolate_states(
    theta_a: dict[str, torch.Tensor], theta_b: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``alpha * a + (1 - alpha) * b`` for float tensors; integer buffers (BN counters) are taken from ``b``."""
    out = {}
    for key, b in theta_b.items():
        a = theta_a[key]
        if not b.is_floating_point():
            out[key] = b.clone()
        elif alpha == 1.0:
            out[key] = a.clone()
        elif alpha == 0.0:
            out[key] = b.clone()
        else:
            out[key] = torch.lerp(b.float(), a.float(), alpha).to(b.dtype)
    return out


def changed_layers(theta_a: dict[str, torch.Tensor], theta_b: dict[str, torch.Tensor]) -> list[str]:
    """State keys whose tensors differ between two states."""
    return [k for k, v in theta_a.items() if not torch.equal(v, theta_b[k])]


class VisualOnly(nn.Module):
    """Wraps an image tower so helpers that expect ``model.visual`` accept it."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.training = visual.training  # so callers that save and restore the mode restore the tower's own
