"""Weight-space arithmetic on image-tower state dicts: the model soup, change detection and merging.

The soup is the one in the paper's restore stage (and WiSE-FT): ``theta(alpha) = alpha theta_u + (1 - alpha) theta_0``.
Every caller -- restore's calibration curve, alpha grids, export, ablations -- goes through :func:`soup`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

State = dict[str, torch.Tensor]


def clone_state(module: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def soup(theta_u: State, theta_0: State, alpha: float) -> State:
    """``alpha * theta_u + (1 - alpha) * theta_0`` for float tensors; integer buffers (BN counters) from theta_0.

    Only the keys of ``theta_0`` are produced, so a partial state (e.g. the layers after a split) soups alone.
    """
    out = {}
    for key, b in theta_0.items():
        a = theta_u[key]
        if not b.is_floating_point() or alpha == 0.0:
            out[key] = b.clone()
        elif alpha == 1.0:
            out[key] = a.clone()
        else:
            out[key] = torch.lerp(b.float(), a.float(), alpha).to(b.dtype)
    return out


def changed_keys(theta_a: State, theta_b: State) -> list[str]:
    """State keys whose tensors differ between two states."""
    return [k for k, v in theta_a.items() if not torch.equal(v, theta_b[k])]


def significant_changes(theta_u: State, theta_0: State, rel_tol: float = 1e-6) -> tuple[list[str], list[str]]:
    """``(changed, negligible)`` float keys: changed beyond ``rel_tol`` of the tensor's largest magnitude, or only
    below it (the remind stage's EMA moves untouched tensors by a float32 rounding step)."""
    changed, negligible = [], []
    for key in changed_keys(theta_u, theta_0):
        a, b = theta_u[key], theta_0[key]
        if not b.is_floating_point():
            continue  # integer buffers (BN counters) are taken from theta_0 at every alpha
        delta = (a.float() - b.float()).abs().max().item()
        scale = b.float().abs().max().item()
        (changed if delta > rel_tol * max(scale, 1e-12) else negligible).append(key)
    return changed, negligible


def merge_states(states: Sequence[State], base: State | None = None, mode: str = "mean") -> State:
    """Merge image-tower states of models that each forgot something (the paper's Tab. 6).

    ``mean``: the average of the states -- equal to ``base + mean_i (theta_i - base)``, averaging the task vectors
    (the paper's "simply merged"). ``sum``: task arithmetic, ``base + sum_i (theta_i - base)`` (needs ``base``;
    keeps each model's full edit, at the risk of compounding damage). Integer buffers come from ``base`` (or the
    first state).
    """
    if not states:
        raise ValueError("nothing to merge")
    if mode not in ("mean", "sum"):
        raise ValueError(f"merge mode must be 'mean' or 'sum', not {mode!r}")
    if mode == "sum" and base is None:
        raise ValueError("task-arithmetic merging ('sum') needs the base state")
    ref = base if base is not None else states[0]
    out = {}
    for key, value in ref.items():
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        stacked = torch.stack([s[key].float() for s in states])
        merged = stacked.mean(0) if mode == "mean" or base is None else base[key].float() + (
            stacked - base[key].float()).sum(0)
        out[key] = merged.to(value.dtype)
    return out
