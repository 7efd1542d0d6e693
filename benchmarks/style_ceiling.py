"""How far can the trainable part of the v3 tower go on a CIFAR-10 style, with labels? (issue 18, docs/decisions.md D29)

A supervised upper bound for the zero-shot goals on CIFAR-10 photos / sketches / poster art / b&w drawings: the
tower is cut before ``--train-from`` (everything before stays the wheel's, as in the recipe), the stages from the cut
on plus a linear 10-way classifier are trained with cross-entropy on the first ``--per-class`` CIFAR-10 *train*
images of each class in the style, and top-1 is measured on the same 200 test images per class the recipe's
evaluation uses. Zero-shot through text cannot beat what the same layers reach with the labels in hand, so a cut whose
supervised top-1 is below the goal cannot meet it.

    CLIPFORGET_DATA=../shared/data PYTHONPATH=. .venv/bin/python benchmarks/style_ceiling.py --threads 2 \\
        --style "black-and-white drawing" --train-from trunk.blocks.5.0 [--bn train] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from clipforget.data.cifar10 import CIFAR10_CLASSES
from clipforget.data.styles import STYLES, STYLES_VERSION, stylize
from clipforget.models.prefix import suffix_tower
from clipforget.pretraining.common import readers as dr
from clipforget.pretraining.common.evaluate import styled_test_indices
from clipforget.pretraining.common.readers import data_root
from clipforget.pretraining.embedded_v3 import LitConfig, resolve_cache, trained_cut
from clipforget.pretraining.embedded_v3.features import cifar_samples, encode_source, encoder_for
from clipforget.pretraining.embedded_v3.head import build_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", default="black-and-white drawing", choices=STYLES)
    parser.add_argument("--train-from", default="trunk.blocks.5.0")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bn", choices=("frozen", "train"), default="frozen")
    parser.add_argument("--styles-version", type=int, default=STYLES_VERSION, help="the renderer (train and test)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LitConfig(train_from=args.train_from, threads=args.threads, cache=args.cache)
    bundle = build_bundle(cfg)
    cut = trained_cut(bundle, cfg)
    encode = encoder_for(bundle.model.visual, cut)
    started = time.perf_counter()
    samples = cifar_samples(data_root(None), cfg.image_size, args.per_class, args.style, args.styles_version)
    train = encode_source(encode, samples)
    test_set = dr.cifar10("test", cfg.image_size, None, resolve_cache(cfg) / "readers")
    labels = np.asarray([CIFAR10_CLASSES.index(n) for n in test_set.labels])
    few = styled_test_indices(labels, 200)
    test_images = test_set.images[torch.from_numpy(few)]
    if args.style != "photo":
        test_images = stylize(test_images, args.style, args.styles_version)
    test = torch.cat([encode(test_images[i : i + 128]).half() for i in range(0, len(test_images), 128)])
    test_labels = torch.from_numpy(labels[few])
    train_labels = torch.tensor([CIFAR10_CLASSES.index(n) for n in train.labels])
    features_seconds = time.perf_counter() - started

    tower = suffix_tower(bundle.model.visual, cut)
    trunk = tower.trunk
    width = trunk(train.feats[:2].float()).shape[1]
    classifier = torch.nn.Linear(width, len(CIFAR10_CLASSES))
    params = [*trunk.parameters(), *classifier.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(0)

    def train_mode() -> None:
        trunk.train()
        if args.bn == "frozen":
            for module in trunk.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    @torch.no_grad()
    def accuracy(feats: torch.Tensor, target: torch.Tensor) -> float:
        trunk.eval()
        logits = torch.cat([classifier(trunk(feats[i : i + 256].float())) for i in range(0, len(feats), 256)])
        train_mode()
        return round(100 * float(logits.argmax(1).eq(target).float().mean()), 1)

    train_mode()
    fit_started = time.perf_counter()
    curve = []
    for step in range(args.steps):
        rows = torch.randint(len(train), (args.batch,), generator=generator)
        loss = F.cross_entropy(classifier(trunk(train.feats[rows].float())), train_labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % max(1, args.steps // 4) == 0:
            point = {"step": step + 1, "loss": round(float(loss.detach()), 3), "test_top1": accuracy(test, test_labels)}
            curve.append(point)
            print(json.dumps(curve[-1]), flush=True)
    probe = torch.randperm(len(train), generator=generator)[:2000]
    report = {
        "style": args.style,
        "train_from": args.train_from,
        "bn": args.bn,
        "styles_version": args.styles_version,
        "per_class": args.per_class,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "train_top1_2000": accuracy(train.feats[probe], train_labels[probe]),
        "test_top1": curve[-1]["test_top1"],
        "curve": curve,
        "features_seconds": round(features_seconds, 1),
        "fit_seconds": round(time.perf_counter() - fit_started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
