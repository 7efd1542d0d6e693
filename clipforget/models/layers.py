"""Which modules of an image tower the stages may adapt, a wrapper that makes a bare tower look like a CLIP, and a
faster equivalent of open_clip's attention pool for inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def adaptable_layers(visual: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the Conv2d / Linear modules that LoRA can adapt and merge back, in the order their forward runs.

    Two kinds are left out: modules whose ``forward`` never runs on ``example`` (open_clip's AttentionPool2d reads
    its q/k/v/c projections' weights directly, so a LoRA wrapper there would silently do nothing), and grouped or
    depthwise convolutions (``groups > 1``: peft cannot merge LoRA into them; see docs/decisions.md).
    """
    called: list[str] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
             for name, module in visual.named_modules()
             if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)]
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


class PooledQueryAttention(nn.Module):
    """open_clip's ``AttentionPool2d`` computed for the one token it returns.

    ``AttentionPool2d`` runs full self-attention over the ``HW + 1`` tokens and keeps token 0 (the mean token), so the
    queries, attention rows and output projections of the ``HW`` other tokens are thrown away. Here only token 0's
    query, its attention row and its output projection are computed: the same function (to rounding), and the
    largest single saving on an alpha grid's per-alpha suffix, where the pool is most of the work at 2x2 tokens.
    Reads the wrapped pool's parameters, so loading other weights into the pool updates it.
    """

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool
        n, c = x.shape[0], x.shape[1]
        tokens = x.reshape(n, c, -1).permute(0, 2, 1)  # N, HW, C
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + p.positional_embedding[None].to(tokens.dtype)  # N, L, C
        heads = p.num_heads
        d = c // heads
        q = F.linear(tokens[:, 0], p.q_proj.weight, p.q_proj.bias).view(n, heads, 1, d) * d**-0.5
        k = F.linear(tokens, p.k_proj.weight, p.k_proj.bias).view(n, -1, heads, d).transpose(1, 2)
        v = F.linear(tokens, p.v_proj.weight, p.v_proj.bias).view(n, -1, heads, d).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # N, heads, 1, L
        out = (attn.to(v.dtype) @ v).reshape(n, c)
        return F.linear(out, p.c_proj.weight, p.c_proj.bias)


def is_attention_pool(module: nn.Module) -> bool:
    """Whether ``module`` is open_clip's ``AttentionPool2d`` (the pool of ModifiedResNet towers)."""
    from open_clip.modified_resnet import AttentionPool2d

    return isinstance(module, AttentionPool2d)
