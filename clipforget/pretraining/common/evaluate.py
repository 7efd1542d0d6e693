"""Evaluation of the embedded model: zero-shot top-1 on held-out sets, COCO-mini recall@5, two retrieval checks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipforget.data.cifar10 import CIFAR10_CLASSES
from clipforget.data.images import ImageSet
from clipforget.data.styles import STYLES, stylize
from clipforget.models.encode import encode_images
from clipforget.models.factory import ClipBundle

from . import readers as dr
from . import vocabulary as vocab
from .text import PooledText, classifier, project_text


@torch.no_grad()
def image_embeddings(bundle: ClipBundle, images: torch.Tensor) -> torch.Tensor:
    """Eval-mode unit image embeddings exactly as clipforget encodes them (its autocast, channels_last)."""
    return encode_images(bundle, images, batch_size=500)


def top1(bundle: ClipBundle, images: torch.Tensor, labels: Sequence[int], cls: torch.Tensor) -> float:
    """Zero-shot top-1 of ``images`` against the classifier ``cls``."""
    feats = image_embeddings(bundle, images)
    return float((feats @ cls.T).argmax(1).eq(torch.as_tensor(list(labels))).float().mean())


@torch.no_grad()
def evaluate(bundle: ClipBundle, text: PooledText | None = None, root: str | None = None,
             cache: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Zero-shot top-1 (neutral templates averaged) on the held-out sets, COCO-mini recall@5, retrieval checks."""
    text = text or PooledText(bundle, None)
    size = bundle.image_size
    imagenet, tiny_classes = dr.class_names(root)
    out: dict[str, Any] = {}

    tiny_val = dr.tiny_imagenet_val(size, root, cache)
    tiny_wnids = [c["wnid"] for c in tiny_classes]
    tiny_cls = classifier(bundle, text, [vocab.display_name(c["name"]) for c in tiny_classes])
    tiny_labels = [tiny_wnids.index(w) for w in tiny_val.labels]
    keep = slice(None) if not quick else slice(0, None, 4)  # quick: every fourth image
    out["tiny_val_top1"] = top1(bundle, tiny_val.images[keep], tiny_labels[keep], tiny_cls)

    samples = dr.imagenet_samples(size, root, cache)
    w2i = {c["wnid"]: int(c["index"]) for c in imagenet}
    in_cls = classifier(bundle, text, vocab.imagenet_display_names(imagenet))
    out["imagenet_samples_top1"] = top1(bundle, samples.images, [w2i[w] for w in samples.labels], in_cls)

    cifar = dr.cifar10("test", size, root, cache)
    cifar_cls = classifier(bundle, text, list(CIFAR10_CLASSES))
    cifar_labels = [CIFAR10_CLASSES.index(n) for n in cifar.labels]
    out["cifar10_test_top1"] = top1(bundle, cifar.images[keep], cifar_labels[keep], cifar_cls)

    monkeys = dr.monkeys10("val", size, root, cache)
    species = list(vocab.MONKEYS10_NAMES)
    monkey_cls = classifier(bundle, text, [vocab.monkey_display_name(s) for s in species])
    out["monkeys10_val_top1"] = top1(bundle, monkeys.images, [species.index(s) for s in monkeys.labels], monkey_cls)

    few = styled_test_indices(cifar_labels, 200 if not quick else 50)
    for style in STYLES[1:]:
        styled = stylize(cifar.images[torch.from_numpy(few)], style)
        out[f"cifar10_test_{style.replace(' ', '_')}_top1"] = top1(bundle, styled, [cifar_labels[i] for i in few],
                                                                   cifar_cls)

    coco = dr.coco_mini(size, root, cache)
    img = image_embeddings(bundle, coco.images.images)
    caps = [c for cs in coco.captions for c in cs]
    owner = torch.tensor([i for i, cs in enumerate(coco.captions) for _ in cs])
    cap = project_text(bundle, text(caps))
    ranks = (cap @ img.T).topk(5, dim=1).indices
    out["coco_caption_to_image_r5"] = float(ranks.eq(owner[:, None]).any(1).float().mean())
    top = (img @ cap.T).topk(5, dim=1).indices
    out["coco_image_to_caption_r5"] = float(owner[top].eq(torch.arange(len(img))[:, None]).any(1).float().mean())
    if not quick:
        out["retrieval"] = retrieval_check(bundle, text, monkeys, tiny_val, tiny_classes)
    return out


def styled_test_indices(labels: list[int] | np.ndarray, per_class: int) -> np.ndarray:
    """The CIFAR-10 test images the style rows are measured on: the first ``per_class`` of each class."""
    array = np.asarray(labels)
    return np.concatenate([np.flatnonzero(array == c)[:per_class] for c in range(len(CIFAR10_CLASSES))])


def retrieval_check(bundle: ClipBundle, text: PooledText, monkeys: ImageSet, tiny_val: ImageSet,
                    tiny_classes: list[dict]) -> dict[str, Any]:
    """Top-20 over the monkeys10 val + Tiny-ImageNet val gallery for two queries, counted by label."""
    gallery = torch.cat([image_embeddings(bundle, monkeys.images), image_embeddings(bundle, tiny_val.images)])
    labels = list(monkeys.labels) + list(tiny_val.labels)
    name = {c["wnid"]: vocab.display_name(c["name"]) for c in tiny_classes}
    primates = {c["wnid"] for c in tiny_classes if name[c["wnid"]] in ("orangutan", "gorilla", "chimpanzee", "baboon")}
    baboon = {c["wnid"] for c in tiny_classes if name[c["wnid"]] == "baboon"}
    out: dict[str, Any] = {}
    for query in ("a photo of a marmoset", "a photo of a monkey"):
        q = project_text(bundle, text([query]))[0]
        top = (gallery @ q).topk(20).indices.tolist()
        hits = [labels[i] for i in top]
        out[query] = {
            "top20": [name.get(h, h) for h in hits],
            "marmosets": sum(h in ("pygmy_marmoset", "silvery_marmoset") for h in hits),
            "monkeys": sum(h in vocab.MONKEYS10_NAMES or h in baboon for h in hits),
            "primates": sum(h in vocab.MONKEYS10_NAMES or h in primates for h in hits),
        }
    return out
