"""Helpers of the recipe tests: a handful of real images of every source the recipes read, and a MiniLM stand-in."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from clipforget.core.paths import data_root
from clipforget.models.encode import encode_images, encode_text
from clipforget.models.factory import create_model
from clipforget.pretraining.common.text import PooledText

NEEDED = (
    "breeds/imagenet-classes.json",
    "tiny-imagenet/train.zip",
    "tiny-imagenet/val",
    "cifar10/train",
    "cifar10/test",
    "monkeys10/train",
    "monkeys10/val",
    "imagenet-samples",
    "coco-mini/captions.json",
)


def missing_sources(src: Path) -> list[str]:
    """The recipe sources the data root ``src`` lacks."""
    return [p for p in NEEDED if not (src / p).exists()]


def _copy_first(src: Path, dst: Path, n: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.iterdir() if p.is_file())[:n]:
        shutil.copy(f, dst / f.name)


def mini_data_root(src: Path, dst: Path) -> None:
    """A handful of real images of every source the recipe reads (4 of the Tiny-ImageNet classes)."""
    (dst / "breeds").mkdir(parents=True)
    shutil.copy(src / "breeds" / "imagenet-classes.json", dst / "breeds")
    tiny = dst / "tiny-imagenet"
    classes = json.loads((src / "tiny-imagenet" / "classes.json").read_text(encoding="utf-8"))[:4]
    wnids = [c["wnid"] for c in classes]
    tiny.mkdir()
    (tiny / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
    with zipfile.ZipFile(src / "tiny-imagenet" / "train.zip") as zin, zipfile.ZipFile(tiny / "train.zip", "w") as zout:
        for wnid in wnids:
            members = sorted(n for n in zin.namelist() if n.startswith(f"{wnid}/") and not n.endswith("/"))[:3]
            for name in members:
                zout.writestr(name, zin.read(name))
    for wnid in wnids:
        _copy_first(src / "tiny-imagenet" / "val" / wnid, tiny / "val" / wnid, 2)
    for split, n in (("train", 2), ("test", 1)):
        for folder in sorted((src / "cifar10" / split).iterdir()):
            _copy_first(folder, dst / "cifar10" / split / folder.name, n)
    for split, n in (("train", 1), ("val", 2)):  # the retrieval check ranks a top 20 of monkeys + Tiny val
        for folder in sorted(p for p in (src / "monkeys10" / split).iterdir() if p.is_dir()):
            _copy_first(folder, dst / "monkeys10" / split / folder.name, n)
    _copy_first(src / "imagenet-samples", dst / "imagenet-samples", 5)
    captions = json.loads((src / "coco-mini" / "captions.json").read_text(encoding="utf-8"))
    keep = sorted(captions)[:6]  # recall@5 needs at least 5 images
    (dst / "coco-mini" / "images").mkdir(parents=True)
    for name in keep:
        shutil.copy(src / "coco-mini" / "images" / name, dst / "coco-mini" / "images" / name)
    (dst / "coco-mini" / "captions.json").write_text(json.dumps({k: captions[k] for k in keep}), encoding="utf-8")


def fake_pooled(self: PooledText, texts, batch: int = 256) -> torch.Tensor:
    """Stand-in for MiniLM (thousands of prompts take minutes on one thread): a fixed random vector per text."""
    out = []
    for t in texts:
        seed = int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)
        out.append(torch.randn(384, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(out)


def check_loads_as_clip(out: Path, weights: dict[str, torch.Tensor], size: int, dim: int) -> None:
    """The exported model: fp16 weights, open_clip loads it, and images and texts encode to unit ``dim`` vectors."""
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    bundle = create_model(str(out))
    assert bundle.image_size == size and bundle.embed_dim == dim
    images = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
    for feats in (encode_images(bundle, images), encode_text(bundle, ["a photo of a monkey", "a car"])):
        assert feats.shape[1] == dim
        assert torch.allclose(feats.norm(dim=-1), torch.ones(len(feats)), atol=1e-3)


def build_with_recipe(recipe, argv: list[str], tmp_path: Path, monkeypatch) -> Path:
    """Build a tiny model with ``recipe`` (a module with ``add_arguments`` + ``build``) on a mini data root made from
    the real one, with MiniLM stood in for; skips when the data root lacks a source."""
    src = data_root()
    missing = missing_sources(src)
    if missing:
        pytest.skip(f"the data root {src} lacks {', '.join(missing)}")
    mini_data_root(src, tmp_path / "data")
    monkeypatch.setenv("CLIPFORGET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(PooledText, "__call__", fake_pooled)
    threads = torch.get_num_threads()
    parser = argparse.ArgumentParser()
    recipe.add_arguments(parser)
    args = parser.parse_args([*argv, "--cache", str(tmp_path / "recipe-cache")])
    args.data_root = str(tmp_path / "data")
    try:
        return recipe.build(args, tmp_path / "model")
    finally:
        torch.set_num_threads(threads)
