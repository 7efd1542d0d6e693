"""The recipe's settings (``LitConfig``); the defaults are the released model's (docs/decisions.md D16, D17, D30)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from clipforget.data.styles import STYLES_VERSION


@dataclass
class LitConfig:
    model_name: str = "efficientnet_lite0"
    image_size: int = 144
    embed_dim: int = 512  # the image head is open_clip's "mlp" projection: F -> 2 * embed_dim -> embed_dim
    # ConSE init of the head: hidden unit c < 1000 = gelu(gain * (ImageNet logit c) - shift)
    gain: float = 1.0
    shift: float = 5.0
    # training sets (train splits only)
    tiny_per_class: int = 75
    cifar_per_class: int = 5000
    style_per_class: int = 1500
    # the fit on cached features
    steps: int = 600
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    kd_weight: float = 1.0  # KL(ImageNet head softmax || softmax over the 1000 class texts)
    kd_temperature: float = 1.0
    tiny_weight: float = 1.0  # Tiny-ImageNet images against the 1000 ImageNet class texts
    cifar_weight: float = 1.0
    style_weight: float = 1.0
    monkeys_weight: float = 1.0
    train_text: bool = True
    train_fc1: bool = True  # False: only the output map, the text projection and the scale (hidden units stay logits)
    # "" = the trunk is locked (cached pooled features); else the first trunk stage the fit trains, e.g.
    # "trunk.blocks.5.0": the activations entering it are cached and that stage onwards trains at ``trunk_lr``
    train_from: str = "trunk.blocks.5.0"
    trunk_lr: float = 3e-4
    flip: bool = False  # mirror cached activation maps at random (a cheap stand-in for flipping the image)
    seed: int = 0
    threads: int = 1
    data_root: str | None = None
    cache: str | None = None  # None: <clipforget cache>/pretrain-embedded

    def key(self) -> str:
        """Hash of everything that shapes the weights (not threads / paths)."""
        d = asdict(self)
        for k in ("threads", "data_root", "cache"):
            d.pop(k)
        d["styles_version"] = STYLES_VERSION  # the renderer of the styled copies (clipforget.data.styles)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
