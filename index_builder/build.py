"""Build, merge and extend gallery indexes: reader -> encoder -> writer (clip-retrieval's split, each replaceable).

* :func:`build` lists the galleries, keeps this shard's slice, decodes in DataLoader workers, encodes in batches
  (GPU when present) and writes an index folder;
* :func:`merge` joins shard folders (same model, shards ``0..n-1``) into one index, rows in unsharded order;
* :func:`add` encodes the files of a gallery that an index does not hold yet and appends them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from clipforget.core.progress import ProgressFn, check_cancelled, no_progress
from clipforget.models.factory import DEFAULT_MODEL, weights_fingerprint
from clipforget.retrieval.index import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    INFO_FILE,
    METADATA_FILE,
    SKIPPED_FILE,
    load_index,
    read_records,
)

from .activations import MAX_STORED_BYTES, stage_inputs, store
from .encoder import ClipImageEncoder
from .indexing import DEFAULT_INDEX_MEMORY, EXACT_THRESHOLD, choose_index_key
from .reader import FolderReader, GalleryFile, list_gallery, shard_files
from .writer import IndexWriter, write_index_folder

Encoder = Callable[[Any], np.ndarray]


@dataclass
class BuildConfig:
    """Options of ``python -m index_builder build`` (defaults are the CLI's)."""

    model: str = DEFAULT_MODEL
    batch_size: int = 256
    workers: int | None = None  # DataLoader decoding processes; None = min(8, CPUs)
    shard: tuple[int, int] = (0, 1)  # (i, n): build the i-th of n contiguous slices
    device: str | None = None  # None = cuda if available else cpu
    index_key: str | None = None  # force a FAISS factory key; None = the rule in index_builder.indexing
    exact_threshold: int = EXACT_THRESHOLD
    max_index_memory: int = DEFAULT_INDEX_MEMORY
    progress: bool = True
    activations_at: str | None = None  # also store what enters this tower stage (index_builder.activations)
    fold_batchnorm: bool = True  # encode with BatchNorms folded into the convolutions (recorded; D21)


def encode_files(files: Sequence[GalleryFile], encoder: ClipImageEncoder, writer: IndexWriter, batch_size: int = 256,
                 workers: int | None = None, progress: bool = True, desc: str = "encoding",
                 report: ProgressFn = no_progress, cancel: threading.Event | None = None) -> dict[str, float]:
    """Decode and encode ``files`` into ``writer`` (failures go to ``writer.skip``); returns timing figures.
    ``report("index", fraction, "3,200 / 21,531 images")`` follows every batch; setting ``cancel`` stops the
    build between two batches (:class:`RunCancelled`; the folder is left incomplete, a later build starts over)."""
    reader = FolderReader(files, encoder.image_size, batch_size, workers)
    start = time.perf_counter()
    encode_seconds = 0.0
    done = 0
    with tqdm(total=len(files), desc=desc, unit="img", disable=not progress, file=sys.stderr) as bar:
        for batch in reader:
            for pos, reason in batch.failed:
                writer.skip(files[pos].path, reason)
            check_cancelled(cancel, "index build")  # decoded, not encoded yet: the cheaper half to throw away
            if batch.positions:
                t0 = time.perf_counter()
                feats = encoder(batch.images)
                encode_seconds += time.perf_counter() - t0
                writer.add(feats, [files[p].record() for p in batch.positions])
            bar.update(len(batch.positions) + len(batch.failed))
            done += len(batch.positions) + len(batch.failed)
            report("index", done / max(1, len(files)), f"{done:,} / {len(files):,} images")
            check_cancelled(cancel, "index build")
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "encode_seconds": round(encode_seconds, 3),
            "images_per_second": round(len(files) / seconds, 1) if seconds > 0 else 0.0}


def build(galleries: Sequence[str | os.PathLike], out_dir: str | os.PathLike, config: BuildConfig | None = None,
          encoder: ClipImageEncoder | None = None, report: ProgressFn = no_progress,
          cancel: threading.Event | None = None) -> Path:
    """Index the images of ``galleries`` (this config's shard of them) into ``out_dir``; returns ``out_dir``.
    ``report`` / ``cancel``: as in :func:`encode_files`."""
    cfg = config or BuildConfig()
    encoder = encoder or ClipImageEncoder.from_spec(cfg.model, cfg.device, cfg.fold_batchnorm)
    files, listing_skips = list_gallery(galleries)
    mine = shard_files(files, cfg.shard)
    writer = IndexWriter(out_dir, encoder.dim)
    if cfg.shard[0] == 0:  # non-image files are reported once, by shard 0
        for path, reason in listing_skips:
            writer.skip(path, reason)
    shard_text = f"{cfg.shard[0]}/{cfg.shard[1]}"
    desc = "encoding" if cfg.shard[1] == 1 else f"shard {shard_text}"
    stage = cfg.activations_at if cfg.shard[1] == 1 else None  # a sharded build stores none
    check_cancelled(cancel, "index build")
    with stage_inputs(encoder.tower, stage) as captured:
        timing = encode_files(mine, encoder, writer, cfg.batch_size, cfg.workers, cfg.progress, desc, report, cancel)
    info = {"model": encoder.bundle.spec, "image_size": encoder.image_size,
            "galleries": [str(Path(g).expanduser().resolve()) for g in galleries],
            "shard": shard_text if cfg.shard[1] > 1 else None, "total_files": len(files),
            "device": str(encoder.bundle.device), "batchnorm_folded": encoder.batchnorm_folded, "build": timing,
            "index_key_forced": cfg.index_key is not None, "exact_threshold": cfg.exact_threshold,
            "max_index_memory": cfg.max_index_memory}
    out = writer.finish(info, index_key=cfg.index_key, exact_threshold=cfg.exact_threshold,
                        max_index_memory=cfg.max_index_memory)
    if stage and captured and sum(c.nbytes for c in captured) <= MAX_STORED_BYTES:
        store(out, stage, captured, weights_fingerprint(encoder.bundle))
    return out


def _read_info(folder: Path) -> dict[str, Any]:
    path = folder / INFO_FILE
    if not path.is_file():
        raise ValueError(f"{folder} is not a finished index or shard folder (no {INFO_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def merge(shard_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, index_key: str | None = None,
          exact_threshold: int = EXACT_THRESHOLD, max_index_memory: int = DEFAULT_INDEX_MEMORY) -> Path:
    """Join the shard folders of one sharded build; refuses missing, duplicate or mismatched shards."""
    folders = [Path(d) for d in shard_dirs]
    infos = [_read_info(f) for f in folders]
    shards = []
    for folder, info in zip(folders, infos, strict=True):
        i, n = (int(x) for x in (info.get("shard") or "0/1").split("/"))
        shards.append((i, n, folder, info))
    counts = {n for _, n, _, _ in shards}
    models = {info["model"] for *_, info in shards}
    galleries = {tuple(info["galleries"]) for *_, info in shards}
    folded = {bool(info.get("batchnorm_folded")) for *_, info in shards}
    if len(counts) != 1 or len(models) != 1 or len(galleries) != 1 or len(folded) != 1:
        raise ValueError(f"shards disagree: shard counts {counts}, models {models}, galleries {len(galleries)} sets, "
                         f"BatchNorm folded {folded}")
    n = counts.pop()
    present = sorted(i for i, *_ in shards)
    if present != list(range(n)):
        raise ValueError(f"need each of shards 0..{n - 1} exactly once, got {present}")
    shards.sort(key=lambda s: s[0])
    embeddings = np.concatenate([np.load(folder / EMBEDDINGS_FILE) for _, _, folder, _ in shards])
    records = [rec for _, _, folder, _ in shards for rec in read_records(folder / METADATA_FILE)]
    skipped = [s for _, _, folder, _ in shards for s in json.loads((folder / SKIPPED_FILE).read_text("utf-8"))]
    first = shards[0][3]
    info = {"model": first["model"], "image_size": first["image_size"], "galleries": first["galleries"], "shard": None,
            "total_files": first["total_files"], "batchnorm_folded": folded.pop(),
            "merged_from": [str(folder.resolve()) for _, _, folder, _ in shards],
            "build": {"shards": [s[3].get("build") for s in shards]}, "index_key_forced": index_key is not None,
            "exact_threshold": exact_threshold, "max_index_memory": max_index_memory}
    return write_index_folder(out_dir, embeddings, records, skipped, info, index_key, exact_threshold, max_index_memory)


def add(index_dir: str | os.PathLike, galleries: Sequence[str | os.PathLike], batch_size: int = 256,
        workers: int | None = None, device: str | None = None, encoder: ClipImageEncoder | None = None,
        progress: bool = True) -> Path:
    """Append the images of ``galleries`` that ``index_dir`` does not hold yet (by path), with the index's model.

    Files skipped before are tried again. The FAISS index is extended in place when the size rule still picks the
    same index type, else rebuilt from the stored embeddings.
    """
    index_dir = Path(index_dir)
    gallery = load_index(index_dir, mmap=False)
    info = gallery.info
    folded = bool(info.get("batchnorm_folded"))
    encoder = encoder or ClipImageEncoder.from_spec(info["model"], device, fold_batchnorm=folded)
    if encoder.dim != int(info["dim"]):
        raise ValueError(f"model {encoder.bundle.spec} gives {encoder.dim}-d embeddings, the index holds {info['dim']}")
    if encoder.batchnorm_folded != folded:
        raise ValueError(f"the index was encoded with BatchNorm {'folded' if folded else 'unfolded'}; "
                         "its new rows must be encoded the same way")
    files, listing_skips = list_gallery(galleries)
    known = set(gallery.paths)
    new = [f for f in files if f.path not in known]
    writer = IndexWriter(index_dir, encoder.dim)
    for path, reason in listing_skips:
        writer.skip(path, reason)
    timing = encode_files(new, encoder, writer, batch_size, workers, progress, "adding")
    retried = {s["path"] for s in writer.skipped} | {r["path"] for r in writer.records}
    skipped = [s for s in gallery.skipped if s["path"] not in retried] + writer.skipped
    added = writer.embeddings()
    embeddings = np.concatenate([np.asarray(gallery.embeddings, dtype=np.float16), added])
    key = info.get("index_key", "Flat")
    index = None
    threshold = int(info.get("exact_threshold", EXACT_THRESHOLD))
    memory = int(info.get("max_index_memory", DEFAULT_INDEX_MEMORY))
    if choose_index_key(len(embeddings), encoder.dim, threshold, memory) == key or info.get("index_key_forced"):
        index = faiss.read_index(str(index_dir / INDEX_FILE))
        if len(added):
            index.add(np.ascontiguousarray(added, dtype=np.float32))
    else:
        key = None  # the size rule picks a new index type
    galleries_all = list(dict.fromkeys([*info.get("galleries", []), *(str(Path(g).resolve()) for g in galleries)]))
    written = {"dim", "count", "index_key", "search_params", "skipped", "updated"}  # write_index_folder sets these
    new_info = {k: v for k, v in info.items() if k not in written}
    new_info["galleries"] = galleries_all
    new_info.setdefault("added", []).append({"galleries": [str(g) for g in galleries], "images": len(added), **timing})
    records = gallery.records + writer.records
    return write_index_folder(index_dir, embeddings, records, skipped, new_info, key, threshold, memory, index=index)
