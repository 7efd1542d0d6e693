"""Inference copies of image towers with each BatchNorm folded into the convolution that feeds it.

In eval mode a BatchNorm is an affine map per channel, so it can be merged into the weights and bias of the
convolution before it (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`): the same function with one pass over the
activations fewer. :func:`fold_batchnorm` makes such a copy, keeping every module name of the tower (so stages,
hooks and state-dict prefixes still find their modules); :func:`checked_fold` also confirms on a probe batch, in
float32, that the copy computes what the tower computes, and gives ``None`` for towers where it does not.

The copy is exact in float32; under reduced-precision autocast its rounding differs from the tower's, so everything
that compares embeddings must come from the same kind of copy (docs/decisions.md D21).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class NormActRemainder(nn.Module):
    """What is left of timm's ``BatchNormAct2d`` once its normalisation went into the convolution before it."""

    def __init__(self, drop: nn.Module, act: nn.Module):
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _remainder(norm: nn.BatchNorm2d) -> nn.Module | None:
    """The module that replaces ``norm`` once folded; ``None`` when it is a kind whose extra behaviour is unknown."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    from timm.layers import BatchNormAct2d

    if type(norm) is BatchNormAct2d:
        return NormActRemainder(norm.drop, norm.act)
    return None


def _foldable(conv: nn.Module | None, norm: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats \
        and norm.running_mean is not None and norm.running_var is not None and conv.out_channels == norm.num_features


def _fold_children(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm that directly follows a convolution among ``module``'s children (registration
    order), recursively; returns how many were folded."""
    folded = 0
    previous_name, previous = None, None
    for name, child in list(module.named_children()):
        remainder = _remainder(child) if _foldable(previous, child) else None
        if remainder is not None and previous_name is not None:
            setattr(module, previous_name, fuse_conv_bn_eval(previous, child))
            setattr(module, name, remainder)
            folded += 1
            previous_name, previous = name, remainder
            continue
        folded += _fold_children(child)
        previous_name, previous = name, child
    return folded


def _folded_copy(tower: nn.Module) -> tuple[nn.Module, int]:
    folded = copy.deepcopy(tower).eval()
    count = _fold_children(folded)
    for param in folded.parameters():
        param.requires_grad_(False)
    return folded, count


def fold_batchnorm(tower: nn.Module) -> nn.Module:
    """An eval-mode copy of ``tower`` without gradients, each BatchNorm that follows a convolution merged into it.

    Pairs are found by registration order among a module's children (a convolution registered right before a
    BatchNorm of its width), which is how torchvision, timm and open_clip write their blocks; :func:`checked_fold`
    confirms the result computes the same function.
    """
    return _folded_copy(tower)[0]


@torch.no_grad()
def checked_fold(tower: nn.Module, probe: torch.Tensor, rel_tol: float = 1e-4) -> nn.Module | None:
    """:func:`fold_batchnorm` of ``tower`` when it folded something and its float32 output on ``probe`` (a normalised
    input batch) equals the tower's to ``rel_tol`` of the output's magnitude; ``None`` otherwise."""
    folded, count = _folded_copy(tower)
    if count == 0:
        return None
    was_training = tower.training
    tower.eval()
    try:
        with torch.autocast(probe.device.type, enabled=False):
            reference = tower(probe).float()
            got = folded(probe).float()
    finally:
        tower.train(was_training)
    error = float((reference - got).abs().max())
    return folded if error <= rel_tol * float(reference.abs().max()) + 1e-6 else None


def probe_input(example: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A seeded random batch shaped like ``example`` (a normalised input), so every channel carries signal."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(example.shape, generator=generator).to(example.device, example.dtype)
