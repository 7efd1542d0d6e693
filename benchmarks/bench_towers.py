"""Image tower throughput on the CPU: images/s of RN50, ViT-B-32 (224 px) and the bundled ``embedded`` (144 px).

    python benchmarks/bench_towers.py --model embedded --model RN50:FILE.pt --model ViT-B-32:FILE.pt [--threads 1]

Stand-in weights (``python -m clipforget pretrain standin --arch RN50``) time the same code as real ones. Each model
encodes uint8 batches (``encode_images``: the autocast and chunking every run and index build uses) for
``--seconds`` of CPU time; the table gives wall images/s and images per CPU-second of this process, which a busy machine
(shared cores) leaves closer to what a quiet one would see than the wall figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from common import random_images

from clipforget.models.encode import encode_images
from clipforget.models.factory import create_model


def measure(spec: str, batch: int, seconds: float) -> dict:
    bundle = create_model(spec)
    size = bundle.image_size
    images = random_images(batch, size)
    encode_images(bundle, images)  # warm-up: allocations, oneDNN kernels
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    # stop on this process's CPU time, so that a machine shared with other jobs still measures enough batches
    while n < 2 * batch or time.process_time() - cpu0 < seconds:
        encode_images(bundle, images)
        n += batch
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"model": spec.split(":")[0], "image_size": size, "images": n, "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "images_per_s": round(n / wall, 2), "images_per_cpu_s": round(n / cpu, 2),
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for spec in args.model:
        print(json.dumps(measure(spec, args.batch, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
