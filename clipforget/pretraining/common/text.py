"""Text features: MiniLM pooled outputs (cached on disk) and their trainable projection."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from clipforget.data.prompts import EMBEDDED_TEMPLATES, fill
from clipforget.models.factory import ClipBundle


class PooledText:
    """MiniLM pooled outputs (before the trainable projection) of texts, computed once and kept on disk."""

    def __init__(self, bundle: ClipBundle, path: Path | None):
        self.bundle = bundle
        self.path = path
        self.table: dict[str, torch.Tensor] = {}
        if path is not None and path.is_file():
            self.table = torch.load(path, weights_only=True)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], batch: int = 256) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            text = self.bundle.model.text
            for i in range(0, len(missing), batch):
                chunk = missing[i : i + batch]
                tokens = self.bundle.tokenizer(chunk)
                mask = (tokens != text.config.pad_token_id).long()
                out = text.transformer(input_ids=tokens, attention_mask=mask)
                pooled = text.pooler(out, mask).float()
                self.table.update(zip(chunk, pooled, strict=True))
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(self.path.name + ".tmp")
                torch.save(self.table, tmp)
                os.replace(tmp, self.path)
        return torch.stack([self.table[t] for t in texts])


def project_text(bundle: ClipBundle, pooled: torch.Tensor) -> torch.Tensor:
    """Unit text embeddings of pooled MiniLM outputs."""
    return F.normalize(bundle.model.text.proj(pooled), dim=-1)


def class_embeddings(bundle: ClipBundle, pooled: torch.Tensor, n_templates: int) -> torch.Tensor:
    """``C,D`` unit class embeddings from pooled ``C*T`` prompt features (CLIP's prompt ensembling)."""
    feats = project_text(bundle, pooled)
    feats = feats.view(-1, n_templates, feats.shape[-1])
    return F.normalize(feats.mean(1), dim=-1)


def classifier(
    bundle: ClipBundle, text: PooledText, names: Sequence[str], templates: Sequence[str] = EMBEDDED_TEMPLATES
) -> torch.Tensor:
    """Zero-shot classifier (``C,D``) of class ``names``, templates averaged."""
    with torch.no_grad():
        pooled = text([fill(t, n) for n in names for t in templates])
        return class_embeddings(bundle, pooled, len(templates))
