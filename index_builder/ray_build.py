"""Index builds over large galleries on a Ray cluster (Ray Data): the same index folder as ``build`` + ``merge``.

One contiguous block of the gallery's file list per worker; :class:`EncodeBatches` (the encoder, loaded once per
actor) decodes and encodes; the driver puts the rows back in file order and writes the folder. Every node must read
the gallery folders at the same paths (shared storage) and import clipforget. Usage: docs/backends.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforget.core.errors import DataError

from .build import BuildConfig
from .encoder import ClipImageEncoder
from .reader import decode, list_gallery
from .writer import write_index_folder


class EncodeBatches:
    """Ray Data's stateful ``map_batches`` class: ``{pos, path}`` -> ``{pos, ok, reason, embedding}``."""

    def __init__(self, model: str, device: str | None = None, decode_threads: int = 4, threads: int | None = None,
                 fold_batchnorm: bool = True):
        import ray

        from clipforget.core.devices import configure_backends, configure_threads

        if device in (None, "auto"):
            device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        configure_threads(threads)
        configure_backends(device)
        self.encoder = ClipImageEncoder.from_spec(model, device, fold_batchnorm)
        self.decode_threads = max(1, decode_threads)
        self._pool = ThreadPoolExecutor(self.decode_threads) if self.decode_threads > 1 else None

    def _decode(self, path: str) -> tuple[torch.Tensor | None, str]:
        image, reason = decode(path, self.encoder.image_size)
        return image, reason or ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        decoded = list(self._pool.map(self._decode, paths)) if self._pool else [self._decode(p) for p in paths]
        ok = np.array([img is not None for img, _ in decoded], dtype=bool)
        embeddings = np.zeros((len(paths), self.encoder.dim), np.float16)
        if ok.any():
            images = torch.stack([img for img, _ in decoded if img is not None])
            if images.device.type == "cpu" and self.encoder.bundle.device.type == "cuda":
                images = images.pin_memory()
            embeddings[ok] = self.encoder(images).astype(np.float16)
        return {"pos": np.asarray(batch["pos"], dtype=np.int64), "ok": ok,
                "reason": np.array([reason for _, reason in decoded], dtype=object), "embedding": embeddings,
                "image_size": np.full(len(paths), self.encoder.image_size, dtype=np.int64),
                "batchnorm_folded": np.full(len(paths), self.encoder.batchnorm_folded, dtype=bool)}


def build_ray(galleries: Sequence[str | os.PathLike], out_dir: str | os.PathLike, config: BuildConfig | None = None,
              workers: int | None = None, address: str | None = None, use_gpu: bool | None = None,
              decode_threads: int = 4) -> Path:
    """Index ``galleries`` into ``out_dir`` on Ray Data (module docstring); ``workers``: encoder actors (default: one
    per GPU of the cluster, else one per CPU); ``address``: as ``ray.init`` (``None``: connect or start locally)."""
    import ray
    from ray.data import ActorPoolStrategy

    cfg = config or BuildConfig()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    files, listing_skips = list_gallery(galleries)
    if not files:
        raise DataError(f"no image files in {', '.join(str(g) for g in galleries)}")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 if use_gpu is None else use_gpu
    n = workers or (gpus if use_gpu else max(1, int(resources.get("CPU", 1))))
    n = max(1, min(n, len(files)))
    cpus = max(1, int(resources.get("CPU", 1)) // n)
    start = time.perf_counter()
    items = [{"pos": i, "path": f.path} for i, f in enumerate(files)]
    encoder_kwargs = {"model": cfg.model, "device": "cuda" if use_gpu else "cpu", "decode_threads": decode_threads,
                      "threads": None if use_gpu else cpus, "fold_batchnorm": cfg.fold_batchnorm}
    dataset = ray.data.from_items(items, override_num_blocks=n).map_batches(
        EncodeBatches, fn_constructor_kwargs=encoder_kwargs, batch_size=cfg.batch_size, batch_format="numpy",
        compute=ActorPoolStrategy(size=n), num_gpus=1 if use_gpu else 0, num_cpus=1 if use_gpu else cpus)
    embeddings: np.ndarray | None = None
    image_size = None
    ok = np.zeros(len(files), dtype=bool)
    reasons: dict[int, str] = {}
    folded: set[bool] = set()
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        pos = np.asarray(batch["pos"], dtype=np.int64)
        emb = np.asarray(batch["embedding"])
        if embeddings is None:
            embeddings = np.zeros((len(files), emb.shape[1]), np.float16)
            image_size = int(np.asarray(batch["image_size"])[0])
        good = np.asarray(batch["ok"], dtype=bool)
        folded.update(bool(f) for f in np.asarray(batch["batchnorm_folded"]).tolist())
        ok[pos[good]] = True
        embeddings[pos[good]] = emb[good]
        for p, reason in zip(pos[~good].tolist(), np.asarray(batch["reason"])[~good].tolist(), strict=True):
            reasons[p] = str(reason)
    seconds = time.perf_counter() - start
    if embeddings is None:
        raise DataError("the Ray build returned no rows")
    if len(folded) > 1:
        raise RuntimeError("the Ray encoders disagree on BatchNorm folding; rebuild the index")
    kept = np.flatnonzero(ok)
    records = [files[i].record() for i in kept]
    skipped = [{"path": p, "reason": r} for p, r in listing_skips]
    skipped += [{"path": files[i].path, "reason": reasons.get(i, "not encoded")} for i in np.flatnonzero(~ok)]
    build = {"engine": "ray-data", "workers": n, "gpus": bool(use_gpu), "seconds": round(seconds, 3),
             "images_per_second": round(len(files) / seconds, 1) if seconds > 0 else 0.0}
    info: dict[str, Any] = {"model": cfg.model, "image_size": image_size,
                            "galleries": [str(Path(g).expanduser().resolve()) for g in galleries], "shard": None,
                            "total_files": len(files), "device": "cuda" if use_gpu else "cpu",
                            "batchnorm_folded": folded.pop() if folded else False, "build": build,
                            "index_key_forced": cfg.index_key is not None, "exact_threshold": cfg.exact_threshold,
                            "max_index_memory": cfg.max_index_memory}
    return write_index_folder(out_dir, embeddings[kept], records, skipped, info, cfg.index_key, cfg.exact_threshold,
                              cfg.max_index_memory)
