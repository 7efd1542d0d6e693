"""Variants of the ``embedded`` (v3) recipe, scored on cached held-out activations (docs/decisions.md D16, D17).

Fits the recipe (``clipforget.pretraining.embedded_v3``: the same ``prepare`` and ``fit`` as the build) with some
settings overridden, then scores zero-shot top-1 on the held-out sets from the activations entering the trained part
of the tower — computed once per cut and cached under ``<recipe cache>/heldout/`` — instead of re-encoding pixels
(the build's own evaluation does that; both agree because everything before the cut is the wheel's).

    CLIPFORGET_DATA=../shared/data .venv/bin/python benchmarks/lit_variants.py --threads 2 \\
        [--set trunk_lr=1e-3 flip=true] [--cache DIR]

Prints ImageNet samples (1000-way), Tiny-ImageNet val (202-way), CIFAR-10 test, its sketch / poster art / b&w
drawing copies (200 per class), monkeys10 val and COCO-mini caption -> image recall@5, in percent.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipforget.data.cifar10 import CIFAR10_CLASSES
from clipforget.data.styles import STYLES, stylize
from clipforget.models.prefix import suffix_tower
from clipforget.pretraining.common import readers as dr
from clipforget.pretraining.common import vocabulary as vocab
from clipforget.pretraining.embedded_v3 import LitConfig, prepare, resolve_cache
from clipforget.pretraining.embedded_v3.features import encode_source, encoder_for
from clipforget.pretraining.embedded_v3.fit import fit
from clipforget.pretraining.embedded_v3.head import prompt_embeddings


def overrides(pairs: list[str]) -> dict:
    kinds = {f.name: getattr(LitConfig(), f.name) for f in dataclasses.fields(LitConfig)}
    out = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        current = kinds[key]
        out[key] = value.lower() in ("1", "true") if isinstance(current, bool) else type(current)(value)
    return out


def heldout(cfg: LitConfig, bundle, cut) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """What enters the trained part for every held-out set (cached per cut)."""
    root, readers = cfg.data_root, resolve_cache(cfg) / "readers"
    size, at = cfg.image_size, cut.first_suffix_stage if cut else "pooled"
    folder = resolve_cache(cfg) / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    encode = encoder_for(bundle.model.visual, cut)
    cifar = dr.cifar10("test", size, root, readers)
    labels = np.asarray([CIFAR10_CLASSES.index(n) for n in cifar.labels])
    few = np.concatenate([np.flatnonzero(labels == c)[:200] for c in range(10)])
    coco = dr.coco_mini(size, root, readers)
    sets = {
        "tiny": lambda: dr.tiny_imagenet_val(size, root, readers),
        "imagenet": lambda: dr.imagenet_samples(size, root, readers),
        "cifar": lambda: cifar,
        "monkeys": lambda: dr.monkeys10("val", size, root, readers),
    }
    out = {}
    for name, load in [*sets.items(), *((s, None) for s in STYLES[1:]), ("coco", None)]:
        path = folder / f"{name.replace(' ', '_')}-{size}px-{at}.pt"
        if not path.is_file():
            if name == "coco":
                images, names = coco.images.images, [str(i) for i in range(len(coco.images.images))]
            elif load is None:
                images, names = stylize(cifar.images[torch.from_numpy(few)], name), [cifar.labels[i] for i in few]
            else:
                data = load()
                images, names = data.images, list(data.labels)
            encoded = encode_source(encode, zip(images, names, strict=True))
            torch.save({"feats": encoded.feats, "labels": encoded.labels}, path)
        saved = torch.load(path, weights_only=True)
        out[name] = (saved["feats"], list(saved["labels"]))
    out["_captions"] = coco.captions
    return out


@torch.no_grad()
def score(bundle, cut, text, imagenet_text, sets, root) -> dict[str, float]:
    tower = suffix_tower(bundle.model.visual, cut).eval() if cut else bundle.model.visual.head
    proj = bundle.model.text.proj

    def embed(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.cat([tower(x[i : i + 1000].float()) for i in range(0, len(x), 1000)]), dim=-1)

    def top1(name: str, class_text: torch.Tensor, index) -> float:
        feats, labels = sets[name]
        logits = embed(feats) @ F.normalize(proj(class_text), dim=-1).T
        return 100 * logits.argmax(1).eq(torch.tensor([index(label) for label in labels])).float().mean().item()

    imagenet, tiny_classes = dr.class_names(root)
    wnid_index = {c["wnid"]: int(c["index"]) for c in imagenet}
    tiny_wnids = [c["wnid"] for c in tiny_classes]
    species = list(vocab.MONKEYS10_NAMES)
    cifar_text = prompt_embeddings(text, list(CIFAR10_CLASSES))
    out = {
        "imagenet": top1("imagenet", imagenet_text, wnid_index.__getitem__),
        "tiny": top1("tiny", prompt_embeddings(text, [vocab.display_name(c["name"]) for c in tiny_classes]),
                     tiny_wnids.index),
        "cifar": top1("cifar", cifar_text, CIFAR10_CLASSES.index),
        **{style: top1(style, cifar_text, CIFAR10_CLASSES.index) for style in STYLES[1:]},
        "monkeys": top1("monkeys", prompt_embeddings(text, [vocab.monkey_display_name(s) for s in species]),
                        species.index),
    }
    images = embed(sets["coco"][0])
    captions = [c for cs in sets["_captions"] for c in cs]
    owner = torch.tensor([i for i, cs in enumerate(sets["_captions"]) for _ in cs])
    cap = F.normalize(proj(F.normalize(text(captions), dim=-1)), dim=-1)
    out["coco_r5"] = 100 * (cap @ images.T).topk(5, dim=1).indices.eq(owner[:, None]).any(1).float().mean().item()
    return {k: round(v, 1) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="LitConfig overrides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None, help="the recipe's cache (default: <clipforget cache>/embedded-v3)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    cfg = LitConfig(data_root=args.data_root, cache=args.cache, threads=args.threads, **overrides(args.set))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    bundle, text, sources, imagenet_text, cut = prepare(cfg)
    sets = heldout(cfg, bundle, cut)
    prepared = time.perf_counter()
    fitted = fit(bundle, cfg, sources, imagenet_text, cut)
    print({"set": args.set, "features_s": round(prepared - started), "fit_s": fitted["seconds"],
           **score(bundle, cut, text, imagenet_text, sets, cfg.data_root)}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
