"""What the fit reads of each training image, streamed once through the frozen part of the tower and cached.

Everything before the first trained layer never changes, so each training image goes through it exactly once: images
are decoded a chunk at a time at model size (never a whole decoded data set in memory), encoded in eval mode, and
only what enters the trained part is kept (fp16): the pooled ``F``-dim trunk features when the trunk is locked, or
the activations entering ``cut.first_suffix_stage`` (``clipforget.models.prefix``) when the fit trains the trunk's
last stages. One file per source under ``<cache>/features/``, keyed by the source, the trunk, the size, the
selection and the cut, written atomically; a later build (any head or objective setting) reuses them.

Sources (training splits only; evaluation images are never read here):

* ``tiny``: Tiny-ImageNet ``train.zip``, the first ``tiny_per_class`` members of each wnid in name order; label = wnid;
* ``cifar``: CIFAR-10 train, the first ``cifar_per_class`` images of each class; label = class name;
* ``cifar-<style>``: the first ``style_per_class`` CIFAR-10 train images of each class in a PIL style (sketch, poster
  art, black-and-white drawing: ``clipforget.data.styles``), styled at model size; label = class name;
* ``monkeys``: every monkeys10 train photo; label = species folder name.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from clipforget.core.atomic import write_atomic
from clipforget.data.cifar10 import CIFAR10_CLASSES, load_cifar10_arrays
from clipforget.data.images import IMAGE_SUFFIXES, list_image_files, open_image, to_model_size
from clipforget.data.styles import STYLES, STYLES_VERSION, stylize
from clipforget.models.prefix import TowerCut, prefix_activations

from ..common.readers import data_root

FORMAT_VERSION = 1
CHUNK = 128

Sample = tuple[torch.Tensor, str]  # uint8 3,S,S image and its label


@dataclass(frozen=True)
class FeatureSet:
    """Cached inputs of the trained part (fp16 ``N,F`` pooled features or ``N,C,H,W`` activations), a label per row."""

    feats: torch.Tensor
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _tiny(root: Path, size: int, per_class: int) -> Iterator[Sample]:
    archive = root / "tiny-imagenet" / "train.zip"
    with zipfile.ZipFile(archive) as zf:
        members: dict[str, list[zipfile.ZipInfo]] = {}
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            parts = Path(info.filename).parts
            if info.is_dir() or len(parts) != 2 or Path(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            members.setdefault(parts[0], []).append(info)
        for wnid, infos in members.items():
            for info in infos[:per_class]:
                try:
                    with Image.open(io.BytesIO(zf.read(info))) as img:
                        yield to_model_size(img.convert("RGB"), size), wnid
                except Exception:  # a bad member is skipped, never fatal
                    continue


def cifar_samples(root: Path, size: int, per_class: int, style: str) -> Iterator[Sample]:
    """The first ``per_class`` CIFAR-10 train images per class at ``size`` px, in ``style``."""
    arrays, ids = load_cifar10_arrays("train", root)
    ids = np.asarray(ids)
    chosen = np.sort(np.concatenate([np.flatnonzero(ids == c)[:per_class] for c in range(len(CIFAR10_CLASSES))]))
    for start in range(0, len(chosen), CHUNK):
        part = chosen[start : start + CHUNK]
        images = torch.stack([to_model_size(Image.fromarray(arrays[i]), size) for i in part])
        if style != "photo":
            images = stylize(images, style)
        yield from zip(images, (CIFAR10_CLASSES[int(ids[i])] for i in part), strict=True)


def _monkeys(root: Path, size: int) -> Iterator[Sample]:
    folder = root / "monkeys10" / "train"
    for path in list_image_files(folder):
        if len(path.relative_to(folder).parts) != 2 or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            yield to_model_size(open_image(path), size), path.parent.name
        except Exception:  # unreadable files are skipped, as every clipforget reader does
            continue


def style_source(style: str) -> str:
    return "cifar-" + style.replace(" ", "_").replace("-", "_")


def sources(tiny_per_class: int, cifar_per_class: int, style_per_class: int
            ) -> dict[str, tuple[str, Callable[[Path, int], Iterator[Sample]]]]:
    """``name -> (selection, samples(root, size))`` for every training source of the recipe."""
    out: dict[str, tuple[str, Callable[[Path, int], Iterator[Sample]]]] = {
        "tiny": (f"first {tiny_per_class}", lambda root, size: _tiny(root, size, tiny_per_class)),
        "cifar": (f"first {cifar_per_class}", lambda root, size: cifar_samples(root, size, cifar_per_class, "photo")),
        "monkeys": ("all", _monkeys),
    }
    for style in STYLES[1:]:
        out[style_source(style)] = (f"first {style_per_class}, styles v{STYLES_VERSION}",
                                    lambda root, size, style=style: cifar_samples(root, size, style_per_class, style))
    return out


def normalised(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> the tower's input, ``(x - 0.5) / 0.5``, channels last."""
    return ((images.float() / 255.0 - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def pooled_features(trunk: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Eval-mode pooled trunk features of uint8 images."""
    return trunk(normalised(images)).float()


Encoder = Callable[[torch.Tensor], torch.Tensor]  # uint8 images -> what the fit reads


def encoder_for(visual: nn.Module, cut: TowerCut | None) -> Encoder:
    """Pooled trunk features (``cut`` None: the trunk is locked) or the activations entering the cut."""
    visual.eval().to(memory_format=torch.channels_last)
    if cut is None:
        return lambda images: pooled_features(visual.trunk, images)
    return lambda images: prefix_activations(visual, cut, normalised(images)).float()


def encode_source(encode: Encoder, samples: Iterator[Sample], log: Callable[[str], None] | None = None) -> FeatureSet:
    """Stream ``samples`` through ``encode`` a chunk at a time."""
    feats: list[torch.Tensor] = []
    labels: list[str] = []
    started = time.perf_counter()
    samples = iter(samples)
    while chunk := list(itertools.islice(samples, CHUNK)):
        images, chunk_labels = zip(*chunk, strict=True)
        feats.append(encode(torch.stack(images)).half().contiguous())
        labels.extend(chunk_labels)
        if log and len(labels) % (CHUNK * 40) == 0:
            log(f"{len(labels)} images, {len(labels) / (time.perf_counter() - started):.0f} img/s")
    return FeatureSet(torch.cat(feats) if feats else torch.zeros((0, 0), dtype=torch.float16), labels)


def _path(cache: Path, name: str, trunk_name: str, size: int, selection: str, root: Path, at: str) -> Path:
    """``at``: "" for pooled features (the key of the files earlier builds wrote), else the cut's first stage."""
    where = f"|{at}" if at else ""
    key = hashlib.sha1(f"{name}|{trunk_name}|{size}|{selection}|{root.resolve()}|v{FORMAT_VERSION}{where}".encode())
    return cache / "features" / f"{name}-{trunk_name}-{size}px{'-' + at if at else ''}-{key.hexdigest()[:12]}.pt"


def training_features(visual: nn.Module, cut: TowerCut | None, trunk_name: str, size: int, cache: Path,
                      root: str | os.PathLike | None, tiny_per_class: int, cifar_per_class: int, style_per_class: int,
                      log: Callable[[str], None] = print) -> dict[str, FeatureSet]:
    """What the fit reads of every training source (:func:`encoder_for`), computed once per (source, trunk, size,
    selection, cut) and cached."""
    base = data_root(root)
    encode = encoder_for(visual, cut)
    at = cut.first_suffix_stage if cut else ""
    out: dict[str, FeatureSet] = {}
    for name, (selection, samples) in sources(tiny_per_class, cifar_per_class, style_per_class).items():
        path = _path(cache, name, trunk_name, size, selection, base, at)
        if path.is_file():
            saved = torch.load(path, weights_only=True)
            out[name] = FeatureSet(saved["feats"], list(saved["labels"]))
            continue
        started = time.perf_counter()
        out[name] = encode_source(encode, samples(base, size), lambda msg, name=name: log(f"features {name}: {msg}"))
        state = {"feats": out[name].feats, "labels": out[name].labels}
        write_atomic(path, lambda tmp, state=state: torch.save(state, tmp))
        log(f"features {name}: {len(out[name])} images in {time.perf_counter() - started:.0f} s")
    return out
