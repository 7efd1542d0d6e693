"""Which modules of an image tower the stages may adapt, and a wrapper that makes a bare tower look like a CLIP."""

from __future__ import annotations

import torch
from torch import nn


def adaptable_layers(visual: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the Conv2d / Linear modules that LoRA can adapt and merge back, in the order their forward runs.

    Two kinds are left out: modules whose ``forward`` never runs on ``example`` (open_clip's AttentionPool2d reads
    its q/k/v/c projections' weights directly, so a LoRA wrapper there would silently do nothing), and grouped or
    depthwise convolutions (``groups > 1``: peft cannot merge LoRA into them; see docs/decisions.md).
    """
    called: list[str] = []
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
        for name, module in visual.named_modules()
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
    ]
    try:
        with torch.no_grad():
            visual(example)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(called))


class VisualOnly(nn.Module):
    """Wraps an image tower so helpers that expect ``model.visual`` accept it."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.training = visual.training  # so callers that save and restore the mode restore the tower's own
