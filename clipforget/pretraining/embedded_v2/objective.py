"""The loss: caption InfoNCE over the bank + distillation of the teacher's 1000-way targets onto class-name texts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clipforget.data.prompts import EMBEDDED_TEMPLATES
from clipforget.models.factory import ClipBundle

from ..common import pretrained
from ..common.text import class_embeddings, project_text
from .captions import CaptionBank
from .config import RecipeConfig
from .training_data import TrainingData


class Objective(nn.Module):
    """Caption InfoNCE over the bank + distillation of the teacher's 1000-way targets onto the class-name texts."""

    def __init__(
        self,
        bundle: ClipBundle,
        bank: CaptionBank,
        cap_pooled: torch.Tensor,
        kd_pooled: torch.Tensor,
        cfg: RecipeConfig,
    ):
        super().__init__()
        self.bundle = bundle
        self.bank = bank
        self.cap_pooled = cap_pooled
        self.kd_pooled = kd_pooled
        self.cfg = cfg
        self.kd_scale = nn.Parameter(torch.tensor(math.log(20.0)))
        self.row_scale = nn.Parameter(torch.tensor(math.log(20.0)))
        self.head_w, _ = pretrained.imagenet_head(cfg.model_name)

    def rows(self) -> torch.Tensor:
        """Text side of the head alignment: each class text towards its (detached) projected head row."""
        cls = class_embeddings(self.bundle, self.kd_pooled, len(EMBEDDED_TEMPLATES))
        with torch.no_grad():
            target = F.normalize(self.bundle.model.visual.head(self.head_w), dim=-1)
        logits = self.row_scale.exp().clamp(max=100) * target @ cls.T
        labels = torch.arange(len(cls))
        nce = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return 10.0 * (1 - (target * cls).sum(-1)).mean() + nce

    def forward(
        self, img: torch.Tensor, idx: torch.Tensor, sty: torch.Tensor, data: TrainingData
    ) -> dict[str, torch.Tensor]:
        """``{"cap", "kd"}`` losses of unit image embeddings ``img`` of training images ``idx`` in styles ``sty``."""
        model = self.bundle.model
        txt = project_text(self.bundle, self.cap_pooled)
        pos, left_out = self.bank.batch_masks(data.group[idx], sty)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        logits = logits.masked_fill(left_out, -1e4)
        target = pos.float() / pos.float().sum(1, keepdim=True)
        cap = -(target * F.log_softmax(logits, dim=-1)).sum(1).mean()
        cls = class_embeddings(self.bundle, self.kd_pooled, len(EMBEDDED_TEMPLATES))
        z = self.kd_scale.exp().clamp(max=100) * img @ cls.T
        t = data.kd_target[idx].float()
        kl = (t * (torch.log(t.clamp_min(1e-8)) - F.log_softmax(z, dim=-1))).sum(1)
        style_w = torch.where(sty == 0, 1.0, self.cfg.kd_style_weight)
        return {"cap": cap, "kd": (style_w * kl).mean()}
