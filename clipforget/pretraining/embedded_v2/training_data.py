"""The training set: images of the three sources in every style, caption groups, teacher targets; and augmentation."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipforget.data.images import ImageSet
from clipforget.data.styles import STYLES, stylize

from ..common import pretrained
from ..common import readers as dr
from .captions import CaptionBank, build_bank, build_groups
from .config import RecipeConfig
from .teacher import teacher_features


def styled_copies(images: ImageSet, tag: str, size: int, cache: Path) -> dict[str, torch.Tensor]:
    """``{style: uint8 N,3,S,S}`` (photo = the images themselves); styled copies cached as ``.npy``."""
    out = {"photo": images.images}
    key = hashlib.sha1("\n".join(images.paths).encode()).hexdigest()[:12]
    for style in STYLES[1:]:
        path = cache / "styles" / f"{tag}-{size}px-{style.replace(' ', '_')}-{key}.npy"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            # renderer 1: what the released `embedded-v2` weights were trained on (docs/decisions.md D29)
            arr = torch.cat([stylize(images.images[i : i + 2048], style, 1) for i in range(0, len(images), 2048)])
            tmp = path.with_name(path.name + ".tmp.npy")
            np.save(tmp, arr.numpy())
            os.replace(tmp, path)
        out[style] = torch.from_numpy(np.load(path))
    return out


@dataclass
class TrainingData:
    images: dict[str, torch.Tensor]  # style -> uint8 N,3,S,S
    group: torch.Tensor  # N, index into bank.groups
    source: np.ndarray  # N, index into SOURCES
    kd_target: torch.Tensor  # N,1000 fp16 probabilities
    teacher_feats: torch.Tensor  # N,F fp16 pooled teacher features
    bank: CaptionBank
    stats: dict[str, Any]


def kd_targets(logits: torch.Tensor, groups: list[int], bank: CaptionBank, cfg: RecipeConfig) -> torch.Tensor:
    """Teacher softmax mixed with each image's label (``label_mix``), fp16 ``N,1000``."""
    p = (logits.float() / cfg.teacher_temperature).softmax(-1)
    if cfg.label_mix <= 0:
        return p.half()
    out = p.clone()
    for g in sorted(set(groups)):
        ids = list(bank.groups[g].imagenet)
        if not ids:
            continue
        rows = torch.tensor([i for i, x in enumerate(groups) if x == g])
        label = torch.zeros((len(rows), p.shape[1]))
        mass = p[rows][:, ids] + 1e-6
        label[:, ids] = mass / mass.sum(1, keepdim=True)
        out[rows] = (1 - cfg.label_mix) * p[rows] + cfg.label_mix * label
    return out.half()


def first_per_class(labels: Sequence[str], per_class: int) -> list[int]:
    """Indices of the first ``per_class`` images of every label (file order)."""
    seen: Counter[str] = Counter()
    keep = []
    for i, label in enumerate(labels):
        seen[label] += 1
        if seen[label] <= per_class:
            keep.append(i)
    return keep


def training_data(cfg: RecipeConfig, cache: Path) -> TrainingData:
    """Read (or load from ``cache``) everything the training loop needs."""
    size = cfg.image_size
    reader_cache = cache / "readers"
    imagenet, tiny_classes = dr.class_names(cfg.data_root)
    groups = build_groups(imagenet, tiny_classes, cfg.max_synonyms)
    bank = build_bank(groups)
    gidx = bank.group_index()
    sets = {
        "tiny": dr.tiny_imagenet_train(size, cfg.data_root, reader_cache),
        "cifar": dr.cifar10("train", size, cfg.data_root, reader_cache),
        "monkeys": dr.monkeys10("train", size, cfg.data_root, reader_cache),
    }
    # CIFAR-10: teacher features are computed (and cached) for the whole split, the rest for the subset used
    keep = {"cifar": first_per_class(sets["cifar"].labels, cfg.cifar_per_class)}
    images: dict[str, list[torch.Tensor]] = {s: [] for s in STYLES}
    group_ids: list[int] = []
    source_ids: list[int] = []
    targets: list[torch.Tensor] = []
    teacher_feats: list[torch.Tensor] = []
    head_w, head_b = pretrained.imagenet_head(cfg.model_name)
    stats: dict[str, Any] = {"skipped": {}}
    for s_id, (tag, full) in enumerate(sets.items()):
        feats = teacher_features(full.paths, cfg.teacher_sizes[tag], cfg.model_name, cfg.data_root, cache, tag)
        data = full
        if tag in keep:
            data = full.subset(keep[tag])
            data.skipped = full.skipped
            feats = feats[torch.tensor(keep[tag])]
        g = [gidx[f"{tag}:{label}"] for label in data.labels]
        logits = feats.float() @ head_w.T + head_b
        targets.append(kd_targets(logits, g, bank, cfg))
        teacher_feats.append(feats)
        copies = styled_copies(data, tag, size, cache) if cfg.epochs > 0 else {"photo": data.images}
        for style, arr in copies.items():
            images[style].append(arr)
        group_ids += g
        source_ids += [s_id] * len(data)
        stats[f"{tag}_images"] = len(data)
        stats["skipped"][tag] = [{"path": p, "reason": r} for p, r in data.skipped]
    return TrainingData(
        {s: torch.cat(v) for s, v in images.items() if v},
        torch.tensor(group_ids),
        np.asarray(source_ids),
        torch.cat(targets),
        torch.cat(teacher_feats),
        bank,
        stats,
    )


def epoch_order(data: TrainingData, cfg: RecipeConfig, rng: np.random.Generator) -> np.ndarray:
    """Indices of one epoch: (a sample of) Tiny-ImageNet, a CIFAR-10 sample, monkeys10 repeated; shuffled."""
    parts = []
    for s_id, (tag, n) in enumerate([("tiny", cfg.tiny_per_epoch), ("cifar", cfg.cifar_per_epoch), ("monkeys", None)]):
        ids = np.flatnonzero(data.source == s_id)
        if tag == "monkeys":
            parts += [ids] * cfg.monkeys_repeat
        else:
            parts.append(rng.permutation(ids)[: n or len(ids)])
    order = np.concatenate(parts)
    return order[rng.permutation(len(order))]


def augment(batch: torch.Tensor, cfg: RecipeConfig, gen: torch.Generator) -> torch.Tensor:
    """uint8 ``B,3,S,S`` -> float in [0, 1]: batch-wise zoom, per-image reflect-padded shift and horizontal flip."""
    n, _, s, _ = batch.shape
    x = batch.float() / 255.0
    if cfg.zoom > 1:
        z = 1 + float(torch.rand((), generator=gen)) * (cfg.zoom - 1)
        big = max(s, round(s * z))
        if big > s:
            x = F.interpolate(x, size=(big, big), mode="bilinear", align_corners=False, antialias=False)
    pad = round(cfg.shift * s)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    span = x.shape[-1] - s
    dx = torch.randint(0, span + 1, (n,), generator=gen)
    dy = torch.randint(0, span + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty((n, 3, s, s))
    for i in range(n):
        crop = x[i, :, dy[i] : dy[i] + s, dx[i] : dx[i] + s]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out.clamp_(0, 1)
