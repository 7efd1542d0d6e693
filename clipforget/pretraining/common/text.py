"""Text features: MiniLM pooled outputs (cached on disk) and their trainable projection."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from clipforget.core.atomic import write_atomic
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
                write_atomic(self.path, lambda tmp: torch.save(self.table, tmp))
        return torch.stack([self.table[t] for t in texts])


def project_text(bundle: ClipBundle, pooled: torch.Tensor) -> torch.Tensor:
    """Unit text embeddings of pooled MiniLM outputs."""
    return F.normalize(bundle.model.text.proj(pooled), dim=-1)


@torch.no_grad()
def classifier(bundle: ClipBundle, text: PooledText, names: Sequence[str],
               templates: Sequence[str] = EMBEDDED_TEMPLATES) -> torch.Tensor:
    """Zero-shot classifier (``C,D``) of class ``names``: unit prompt embeddings averaged over the templates."""
    feats = project_text(bundle, text([fill(t, n) for n in names for t in templates]))
    return F.normalize(feats.view(-1, len(templates), feats.shape[-1]).mean(1), dim=-1)
