"""Recipe of ``embedded-cifar``: a ModifiedResNet image tower trained on CIFAR-10 against frozen MiniLM captions.

    python -m clipforget pretrain embedded-cifar [--out assets/embedded-cifar] [--epochs 10] [--seed 0]

Captions come from ``clipforget.prompts.caption_bank``: class names (with synonyms), the coarse group (vehicle /
animal) and a style word, for each image in its own style (photo, or a PIL-made sketch / poster / drawing copy).
Loss: multi-positive InfoNCE of each image against the whole caption bank (every caption that describes the image
is a positive, with equal target mass), so the text side is contrastive over all captions rather than a batch.
The MiniLM transformer is frozen (its pooled outputs are computed once); the text projection, the image tower and
the logit scale are trained. Deterministic for a given seed and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipforget.core.atomic import write_json
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10, coarse_label, load_cifar10_arrays
from clipforget.data.imagenet import imagenet_samples
from clipforget.data.images import ImageSet, arrays_to_imageset
from clipforget.data.prompts import caption_bank
from clipforget.data.styles import STYLES, stylize
from clipforget.evaluation import zero_shot_accuracy
from clipforget.models.encode import autocast
from clipforget.models.factory import ClipBundle, new_model, save_checkpoint

from .common.text import PooledText

NAME = "embedded-cifar"


@dataclass
class PretrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    photo_share: float = 0.55  # the rest is split evenly over the other styles
    seed: int = 0
    limit: int | None = None  # images per epoch (smoke tests)


def _positives(labels: np.ndarray, styles: np.ndarray, meta: list[tuple[str, str, str]]) -> torch.Tensor:
    """``N,K`` 0/1 matrix: caption k describes image n (class or coarse subject; neutral or same style)."""
    subject = np.array([m[0] for m in meta])
    style = np.array([m[2] for m in meta])
    names = np.array(CIFAR10_CLASSES)[labels]
    coarse = np.array([coarse_label(n) for n in names])
    style_names = np.array(STYLES)[styles]
    match_subject = (subject[None, :] == names[:, None]) | (subject[None, :] == coarse[:, None])
    match_style = (style[None, :] == "") | (style[None, :] == style_names[:, None])
    return torch.from_numpy(match_subject & match_style).float()


def _augment(images: torch.Tensor, gen: torch.Generator, pad: int = 8) -> torch.Tensor:
    """Random translation (reflect-padded crop) and horizontal flip, on a uint8 batch."""
    n, _, h, w = images.shape
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty((n, 3, h, w), dtype=torch.uint8)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = (crop.flip(-1) if flip[i] else crop).to(torch.uint8)
    return out


def pretrain(cfg: PretrainConfig, out_dir: str | Path) -> Path:
    """Train, evaluate and save the embedded model to ``out_dir`` (fp16 safetensors + config + report)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    start = time.time()
    bundle = new_model(NAME)
    model = bundle.model
    size = bundle.image_size

    print("decoding CIFAR-10 train and making style copies ...", flush=True)
    arrays, labels = load_cifar10_arrays("train")
    if cfg.limit:
        keep = rng.permutation(len(labels))[: cfg.limit]
        arrays, labels = arrays[keep], labels[keep]
    base = arrays_to_imageset(arrays, [""] * len(labels), size).images
    copies = {s: (base if s == "photo" else stylize(base, s)) for s in STYLES}

    captions, meta = caption_bank()
    pooled = PooledText(bundle, None)(captions)

    model.text.transformer.requires_grad_(False)
    model.visual.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = len(labels) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))

    other_share = (1 - cfg.photo_share) / (len(STYLES) - 1)
    style_probs = [cfg.photo_share] + [other_share] * (len(STYLES) - 1)
    model.train()
    model.text.transformer.eval()
    step = 0
    bar = tqdm(total=total, desc="pretrain embedded", unit="step")
    for _epoch in range(cfg.epochs):
        order = rng.permutation(len(labels))
        styles = rng.choice(len(STYLES), size=len(labels), p=style_probs)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            batch = torch.empty((len(idx), 3, size, size), dtype=torch.uint8)
            for s_id, s_name in enumerate(STYLES):
                sel = np.flatnonzero(styles[idx] == s_id)
                if len(sel):
                    batch[torch.from_numpy(sel)] = copies[s_name][torch.from_numpy(idx[sel])]
            batch = _augment(batch, gen)
            target = _positives(labels[idx], styles[idx], meta)
            target = target / target.sum(1, keepdim=True)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with autocast(bundle):
                img = model.visual(bundle.normalize(batch).contiguous(memory_format=torch.channels_last))
            img = F.normalize(img.float(), dim=-1)
            txt = F.normalize(model.text.proj(pooled), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
            loss = -(target * F.log_softmax(logits, dim=-1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step):.1e}")
    bar.close()
    report = {"config": asdict(cfg), "train_seconds": round(time.time() - start, 1)}
    model.eval()
    model.visual.to(memory_format=torch.contiguous_format)
    report.update(evaluate_embedded(bundle))
    out_dir = Path(out_dir)
    save_checkpoint(bundle, out_dir, metadata={"trained_by": f"clipforget.pretraining ({NAME})", **report},
                    dtype=torch.float16)
    report["weights_mb"] = round((out_dir / "open_clip_model.safetensors").stat().st_size / 2**20, 2)
    write_json(out_dir / "training_report.json", report)
    print(json.dumps(report, indent=2))
    return out_dir


def evaluate_embedded(bundle: ClipBundle) -> dict:
    """Zero-shot top-1 of a model on CIFAR-10 test, the mapped ImageNet samples and the styled CIFAR-10 test."""
    test = cifar10("test", bundle.image_size)
    classes = list(CIFAR10_CLASSES)
    out = {"cifar10_test_top1": zero_shot_accuracy(bundle, test, classes)}
    out["imagenet_samples_top1"] = zero_shot_accuracy(bundle, imagenet_samples(bundle.image_size), classes)
    few = cifar10("test", bundle.image_size, per_class=200)
    for style in STYLES[1:]:
        styled = ImageSet(stylize(few.images, style), few.labels, few.paths)
        out[f"cifar10_test_{style.replace(' ', '_')}_top1"] = zero_shot_accuracy(bundle, styled, classes)
    coarse = few.relabel({c: coarse_label(c) for c in classes})
    out["cifar10_test_coarse_top1"] = zero_shot_accuracy(bundle, coarse, ["vehicle", "animal"])
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m clipforget pretrain embedded-cifar``."""
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=PretrainConfig.seed)
    parser.add_argument("--limit", type=int, default=None, help="images per epoch (smoke test)")


def build(args: argparse.Namespace, out_dir: Path) -> Path:
    return pretrain(PretrainConfig(epochs=args.epochs, seed=args.seed, limit=args.limit), out_dir)
