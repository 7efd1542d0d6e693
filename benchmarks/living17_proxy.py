"""A LIVING-17-shaped proxy folder from the ImageNet sample images, to smoke-run the living17 setting end to end.

This machine has one ImageNet image per class, not the ~1,300 the setting wants. For each of the 68 LIVING-17
wnids this writes ``OUT/<wnid>/`` with ``--copies`` random crops / flips / colour jitters of that one image, so every
method can run through the real ``living17`` builder on the embedded model. Its numbers are *not* LIVING-17 results
(train, calibration and evaluation images are views of the same photo); with a real ImageNet folder use
``python -m clipforget bench --setting living17 --imagenet-root /path/to/imagenet/train``.

    python benchmarks/living17_proxy.py --out /tmp/living17_proxy --copies 12
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from clipforget import data
from clipforget.core.paths import data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    samples = {p.name.split("_", 1)[0]: p for p in (data_root() / "imagenet-samples").iterdir()}
    wnids = [e["wnid"] for entries in data.living17().values() for e in entries]
    missing = [w for w in wnids if w not in samples]
    if missing:
        raise SystemExit(f"no sample image for {missing}")
    for wnid in wnids:
        folder = Path(args.out) / wnid
        folder.mkdir(parents=True, exist_ok=True)
        image = data.open_image(samples[wnid])
        w, h = image.size
        for i in range(args.copies):
            scale = rng.uniform(0.6, 1.0)
            cw, ch = int(w * scale), int(h * scale)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            view = image.crop((x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            view = ImageEnhance.Color(view).enhance(rng.uniform(0.7, 1.3))
            view.save(folder / f"{wnid}_{i:03d}.JPEG", quality=90)
    print(f"{len(wnids)} classes x {args.copies} views in {args.out}")


if __name__ == "__main__":
    main()
