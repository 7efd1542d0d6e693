"""The recipe's settings (``RecipeConfig``); the defaults are the released model's."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

# The released model's input size and trained part (the other candidate: 128, "blocks:4").
IMAGE_SIZE, TRAINABLE = 96, "all"


@dataclass
class RecipeConfig:
    model_name: str = "efficientnet_lite0"
    image_size: int = IMAGE_SIZE
    embed_dim: int = 256
    trainable: str = TRAINABLE  # proj | head | blocks:K (blocks K.. + head) | all
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3  # projections and scales
    trunk_lr: float = 3e-4
    weight_decay: float = 0.02
    warmup_steps: int = 100
    photo_share: float = 0.6  # the rest is split evenly over the other styles
    kd_weight: float = 1.0
    kd_style_weight: float = 0.5  # distillation weight on styled copies (target: the photo's)
    fd_weight: float = 2.0  # feature distillation: 1 - cos(student trunk features, teacher trunk features)
    lp_steps: int = 600  # projection init (0: random init)
    lp_mode: str = "features"  # features: both projections fitted on teacher features; head: see train.py
    lp_batch: int = 512
    lp_lr: float = 3e-3
    row_weight: float = 0.0  # keep every class text near its head row in embedding space (all 1000, seen or not)
    teacher_sizes: dict[str, int] = field(default_factory=lambda: {"tiny": 160, "cifar": 128, "monkeys": 224})
    teacher_temperature: float = 1.0
    label_mix: float = 0.5  # target = (1 - label_mix) teacher + label_mix label
    tiny_per_epoch: int | None = 15000  # None: all 30,300
    cifar_per_class: int = 2500  # CIFAR-10 train images used (the first of each class), teacher features included
    cifar_per_epoch: int = 5000
    monkeys_repeat: int = 4
    max_synonyms: int = 3
    zoom: float = 1.25  # batch-wise random zoom in [1, zoom]
    shift: float = 0.125  # random translation, fraction of the size (reflect padded)
    frozen_bn: str = "eval"  # eval: frozen BN layers keep ImageNet statistics; train: re-estimate them
    seed: int = 0
    threads: int = 1
    eval_at: tuple[int, ...] = ()  # epochs after which to run a (quick) evaluation
    data_root: str | None = None
    cache: str | None = None  # None: <clipforget cache>/embedded-pretrain

    def key(self) -> str:
        """Hash of everything that shapes the weights (not threads / eval / paths)."""
        d = asdict(self)
        for k in ("threads", "eval_at", "data_root", "cache", "epochs"):
            d.pop(k)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
