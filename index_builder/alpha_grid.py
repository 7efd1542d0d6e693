"""Builds alpha grids: a gallery's embeddings under every model soup ``theta(alpha)`` of an unlearning run.

:func:`compute_alpha_grid` writes ``<out>/embeddings.f16.npy`` and ``grid.json`` (the format that
:class:`clipforget.retrieval.alpha_grid.AlphaGrid` reads), a reader -> encoder -> writer pass like
:func:`index_builder.build.build`. The image tower is cut as the prefix cache cuts it (:mod:`clipforget.models.prefix`):
every image goes once through the stages before the first one the unlearning changed, and only the rest runs once
per alpha, under the same autocast, memory format and normalisation as :func:`clipforget.models.encode.image_features`,
so the result equals a full re-encode. Tensors that the remind stage's EMA moved only by float32 rounding count as
unchanged (:func:`significant_changes`). Stored gallery activations (:mod:`index_builder.activations`) and grids filled
in two goes (``first`` / ``stop_after_first``): docs/index_builder.md and docs/decisions.md D18.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipforget.core.atomic import write_json
from clipforget.core.devices import resolve_device
from clipforget.core.errors import RunCancelled
from clipforget.core.locks import file_lock
from clipforget.core.progress import ProgressFn, check_cancelled, no_progress
from clipforget.models.encode import autocast, in_chunks
from clipforget.models.factory import ClipBundle, weights_fingerprint
from clipforget.models.fold import checked_fold, fold_batchnorm, probe_input
from clipforget.models.layers import PooledQueryAttention, is_attention_pool
from clipforget.models.prefix import (
    TowerCut,
    prefix_activations,
    replace_submodule,
    stage_of,
    suffix_tower,
    tower_stages,
)
from clipforget.models.weights import State, significant_changes, soup
from clipforget.retrieval.alpha_grid import GRID_EMBEDDINGS, GRID_INFO, AlphaGrid, same_alphas
from clipforget.retrieval.index import INFO_FILE, METADATA_FILE, GalleryIndex, read_records

from .activations import MAX_STORED_BYTES, find_stored, store
from .encoder import ClipImageEncoder
from .reader import FolderReader, GalleryFile

DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))


@dataclass
class AlphaGridConfig:
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    batch_size: int = 256
    workers: int | None = None  # DataLoader decoding processes (None = min(8, CPUs))
    cache_bytes: int = 1 << 30  # activations cached per chunk of the gallery
    store_at: str | None = None  # stage whose input to store with the index (None: the grid's first recomputed one)
    rel_tol: float = 1e-6  # relative change below which a tensor counts as unchanged (EMA rounding noise)
    device: str | None = None  # None = cuda if available else cpu


# --- the image tower cut where the unlearning starts (clipforget.models.prefix) ------------------------------


class SplitForward:
    """The image tower cut (:class:`~clipforget.models.prefix.TowerCut`) before the first stage the unlearning
    changed: the prefix runs theta_original once per image, the suffix (:func:`~clipforget.models.prefix.suffix_tower`)
    runs theta(alpha) on what enters that stage. Chains of sub-modules and ViTs alike; a tower that cannot be split is
    one stage, i.e. a full forward per alpha."""

    def __init__(self, bundle: ClipBundle, theta_u: State, theta_0: State, rel_tol: float = 1e-6,
                 fold_batchnorm: bool = False):
        self.bundle = bundle
        self.visual = copy.deepcopy(bundle.model.visual).eval()
        self.visual.load_state_dict(theta_0)
        example = bundle.example_input()
        found = tower_stages(self.visual, example)
        self.sequential = found is not None
        kind, names = found if found is not None else ("chain", ("",))
        self.stages: list[str] = list(names)
        folded = checked_fold(self.visual, probe_input(example)) if fold_batchnorm else None
        self.batchnorm_folded = folded is not None  # as the index was encoded (ClipImageEncoder, D21)
        self._original = (folded if folded is not None else copy.deepcopy(self.visual)).eval()  # theta_0: the prefix
        self.changed, self.negligible = significant_changes(theta_u, theta_0, rel_tol)
        self.split = min((stage_of(names, k) for k in self.changed), default=len(names))
        if not self.sequential and self.changed:
            self.split = 0
        self.cut = TowerCut(kind, tuple(names), self.split)
        suffix_names = tuple(name + "." for name in names[self.split :]) if self.split > 0 else ("",)
        keys = [k for k in theta_0 if k.startswith(suffix_names)]
        self._theta_u = {k: theta_u[k] for k in keys}
        self._theta_0 = {k: theta_0[k] for k in keys}
        self._towers: dict[int, nn.Module] = {}  # start stage -> theta_0 tower taking the activations entering it
        self._pooled_query = self.sequential and self.split < len(names) and self._pooled_query_agrees()
        self._suffix: nn.Module | None = None
        self.alpha: float | None = None
        self.set_alpha(0.0)

    def _pooled_query_agrees(self, tol: float = 2e-2) -> bool:
        """Whether the last stage is open_clip's ``AttentionPool2d`` and :class:`PooledQueryAttention` agrees with it
        on a probe batch (relative max error below ``tol``, i.e. bf16 rounding)."""
        pool = self._original.get_submodule(self.stages[-1])
        if not is_attention_pool(pool):
            return False
        size = self.bundle.image_size
        probe = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        h = self.bundle.normalize(probe).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(self.bundle):
            h = prefix_activations(self._original, replace(self.cut, split=len(self.stages) - 1), h)
            ref, got = pool(h).float(), PooledQueryAttention(pool)(h).float()
        return float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-6)) < tol

    @property
    def split_name(self) -> str:
        """Name of the first recomputed stage (``"-"`` when the unlearning changed nothing)."""
        return self.stages[self.split] if self.split < len(self.stages) else "-"

    def set_alpha(self, alpha: float) -> None:
        """Make the suffix run ``theta(alpha)`` (the prefix keeps theta_original)."""
        if alpha == self.alpha:
            return
        self.visual.load_state_dict(soup(self._theta_u, self._theta_0, float(alpha)), strict=False)
        self.alpha = alpha
        if self.split >= len(self.stages):
            return
        # a folded copy of theta(alpha) when the index ran a folded theta_0 (folding holds for any weights)
        running = fold_batchnorm(self.visual) if self.batchnorm_folded else self.visual
        suffix = suffix_tower(running, self.cut) if self.split > 0 else copy.deepcopy(running)
        if self._pooled_query:
            last = self.stages[-1]
            replace_submodule(suffix, last, PooledQueryAttention(suffix.get_submodule(last)))
        self._suffix = suffix.eval()

    @torch.no_grad()
    def prefix(self, images: torch.Tensor, capture: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images -> the activations entering stage ``split`` (what gets cached), and those entering stage
        ``capture`` (``<= split``) when asked."""
        x = self.bundle.normalize(images).contiguous(memory_format=torch.channels_last)
        if capture == 0:
            return self.advance(x, 0), x
        if capture is None or capture > self.split:
            return self.advance(x, 0), None
        at_capture = self.advance(x, 0, capture)
        return self.advance(at_capture, capture), at_capture

    def _run(self, forward: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(self.bundle):
            return in_chunks(forward, h)

    @torch.no_grad()
    def advance(self, h: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        """Activations entering stage ``start`` (``<= split``; stored float16) -> those entering stage ``stop``
        (default: ``split``; past the last stage: the tower's output)."""
        stop = self.split if stop is None else stop
        x = h.to(self.bundle.device)
        x = x.float() if x.dtype == torch.float16 else x  # stored rows; a tensor from this tower passes as it is
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if stop <= start:
            return x
        if start not in self._towers:
            self._towers[start] = self._original if start == 0 else suffix_tower(
                self._original, replace(self.cut, split=start)).eval()
        tower = self._towers[start]
        if stop >= len(self.stages):
            return self._run(tower, x)
        cut = replace(self.cut, split=stop)
        return self._run(lambda part: prefix_activations(tower, cut, part), x)

    @torch.no_grad()
    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """Cached activations -> unit-norm embeddings under the current alpha."""
        out = h if self._suffix is None else self._run(self._suffix, h)
        return F.normalize(out.float(), dim=-1)


# --- the grid ------------------------------------------------------------------------------------------------


def compute_alpha_grid(original: ClipBundle, theta_u: State, index_dir: str | os.PathLike, out: str | os.PathLike,
                       config: AlphaGridConfig | None = None, progress: ProgressFn = no_progress,
                       overwrite: bool = False, cancel: threading.Event | None = None,
                       provenance: dict[str, Any] | None = None, rows: Sequence[int] | None = None,
                       first: Sequence[float] = (), stop_after_first: bool = False) -> Path:
    """Write the alpha grid of ``theta_u`` against ``original`` for the gallery of ``index_dir`` into ``out``.

    ``rows`` restricts the grid to those index rows (ascending; recorded in ``grid.json``), e.g. a fixed sample of a
    large gallery for a quick run. An existing grid with the same alphas and rows is kept unless ``overwrite``; a
    partial one (see below) is completed.

    ``first``: grid points (nearest to these alphas) computed before the others; the grid becomes readable once they
    are, with ``grid.json``'s ``ready`` listing the points done, and grows point by point. ``stop_after_first``
    returns then, leaving a partial grid that a later call completes. Setting ``cancel`` stops the computation
    between batches and between alphas with :class:`~clipforget.core.errors.RunCancelled`: before the grid became
    readable the partial file is removed and an existing grid is left as it was; afterwards the points done stay.
    ``provenance`` is recorded in ``grid.json``.
    """
    cfg = config or AlphaGridConfig()
    index_dir, out = Path(index_dir), Path(out)
    records = read_records(index_dir / METADATA_FILE)
    provenance = dict(provenance or {})
    if rows is not None:
        rows = sorted({int(r) for r in rows})
        if rows and not 0 <= rows[0] <= rows[-1] < len(records):
            raise ValueError(f"grid rows outside the index's {len(records)} rows")
        provenance["rows"] = rows
    alphas = [float(a) for a in cfg.alphas]
    priority = list(dict.fromkeys(int(np.abs(np.asarray(alphas) - float(a)).argmin()) for a in first))
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".grid.lock"):  # one process computes a grid at a time; the next finds it done
        ready: set[int] | None = None
        if not overwrite and (out / GRID_INFO).is_file():
            old = json.loads((out / GRID_INFO).read_text(encoding="utf-8"))
            if same_alphas(old.get("alphas", []), alphas) \
                    and old.get("count") == (len(rows) if rows is not None else len(records)) \
                    and old.get("rows") == provenance.get("rows"):
                ready = set(old.get("ready", range(len(alphas))))
                if len(ready) == len(alphas) or (stop_after_first and set(priority) <= ready):
                    return out
                provenance = {k: v for k, v in old.items() if k not in _COMPUTED_KEYS}
        plan = GridPlan(alphas, priority, ready, stop_after_first)
        tmp = out / f".{GRID_EMBEDDINGS}.partial"
        try:
            return _compute_grid(original, theta_u, index_dir, records, rows, out, tmp, cfg, plan, progress, cancel,
                                 provenance)
        finally:
            tmp.unlink(missing_ok=True)


_COMPUTED_KEYS = {"alphas", "count", "dim", "ready", "sequential_split", "batchnorm_folded", "stages",
                  "first_recomputed_stage", "cached_activation_shape", "activations", "changed_tensors",
                  "negligible_changes", "config", "seconds"}


@dataclass
class GridPlan:
    """Which grid points to compute, in which order: ``priority`` first (one pass), then the rest."""

    alphas: list[float]
    priority: list[int]
    ready: set[int] | None  # points of an existing partial grid (None: a new grid)
    stop_after_first: bool

    def passes(self) -> list[list[int]]:
        done = self.ready or set()
        first = [i for i in self.priority if i not in done]
        rest = [i for i in range(len(self.alphas)) if i not in done and i not in first]
        if not first:
            return [rest] if rest else []
        return [first] if self.stop_after_first or not rest else [first, rest]


def _compute_grid(original: ClipBundle, theta_u: State, index_dir: Path, records: list[dict],
                  rows: list[int] | None, out: Path, tmp: Path, cfg: AlphaGridConfig, plan: GridPlan,
                  progress: ProgressFn, cancel: threading.Event | None, provenance: dict[str, Any]) -> Path:
    device = resolve_device(cfg.device)
    if original.device.type != device:
        original.model.to(device)
    t_start = time.perf_counter()
    index_info = json.loads((index_dir / INFO_FILE).read_text(encoding="utf-8"))
    split = SplitForward(original, theta_u, original.visual_state(), cfg.rel_tol,
                         fold_batchnorm=bool(index_info.get("batchnorm_folded")))
    source = GallerySource(original, split, index_dir, records, rows, cfg)
    count, dim, alphas = len(source), original.embed_dim, plan.alphas
    timing = {"load_models": time.perf_counter() - t_start, "decode_and_prefix": 0.0, "suffix": 0.0}
    ready = set(plan.ready or ())
    if plan.ready is None:
        grid = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(alphas), count, dim))
    else:
        grid = np.load(out / GRID_EMBEDDINGS, mmap_mode="r+")
    varying = split.split < len(split.stages)

    def info() -> dict[str, Any]:
        return {"alphas": alphas, "count": count, "dim": dim, "index_dir": str(index_dir.resolve()),
                "index_name": out.name, **provenance, "model": original.spec,
                **({} if len(ready) == len(alphas) else {"ready": sorted(ready)}),
                "sequential_split": split.sequential, "batchnorm_folded": split.batchnorm_folded,
                "stages": list(split.stages),
                "first_recomputed_stage": split.split_name, "cached_activation_shape": source.shape,
                "activations": source.origin, "changed_tensors": split.changed, "negligible_changes": split.negligible,
                "config": asdict(cfg), "seconds": {k: round(v, 3) for k, v in timing.items()}}

    def publish(points: list[int]) -> None:
        """Mark ``points`` done; the first time, move the new grid into place (readers see it from then on)."""
        grid.flush()
        ready.update(points)
        timing["total"] = time.perf_counter() - t_start
        if tmp.exists():  # the first points of a new grid: no reader may pair an old grid.json with the new file
            (out / GRID_INFO).unlink(missing_ok=True)
            os.replace(tmp, out / GRID_EMBEDDINGS)
        elif not (out / GRID_EMBEDDINGS).is_file():  # the run was deleted while its grid was being filled
            raise RunCancelled(f"{out} was removed")
        write_json(out / GRID_INFO, info())

    def compute(chunk: list[tuple[list[int], torch.Tensor]], points: list[int]) -> None:
        t0 = time.perf_counter()
        positions = [p for pos, _ in chunk for p in pos]
        for i in points:
            check_cancelled(cancel, "alpha grid")
            if not varying:  # nothing changed: every alpha is the original model
                source_point = next(iter(ready), None)
                if source_point is not None:
                    grid[i, positions] = grid[source_point, positions]
                    continue
            split.set_alpha(alphas[i])
            for pos, h in chunk:
                grid[i, pos] = split.suffix(h).cpu().numpy().astype(np.float16)
        timing["suffix"] += time.perf_counter() - t0

    resident: list[tuple[list[int], torch.Tensor]] | None = None
    for points in plan.passes():
        if resident is None:
            chunk: list[tuple[list[int], torch.Tensor]] = []
            chunk_bytes, flushed = 0, False
            t0 = time.perf_counter()
            for positions, h in source.batches(cancel, progress):
                chunk.append((positions, h))
                chunk_bytes += h.numel() * h.element_size()
                if chunk_bytes >= cfg.cache_bytes:  # too large to hold: each chunk goes through every point
                    timing["decode_and_prefix"] += time.perf_counter() - t0
                    compute(chunk, points)
                    chunk, chunk_bytes, flushed = [], 0, True
                    t0 = time.perf_counter()
            timing["decode_and_prefix"] += time.perf_counter() - t0
            if flushed:
                compute(chunk, points)
                publish(points)
                continue
            resident = chunk  # the whole gallery's activations fit: kept for every point and pass
        for i in points:  # point by point, so a partial grid grows one alpha at a time
            compute(resident, [i])
            publish([i])
            progress("alpha grid", len(ready) / len(alphas), f"{len(ready)}/{len(alphas)} alphas")
    return out


class GallerySource:
    """The activations entering the grid's first recomputed stage, batch by batch, in grid row order: from the
    index's stored activations when it has valid ones at or before that stage (:mod:`index_builder.activations`),
    else by decoding the gallery -- storing them for the next grid when the grid covers the whole index."""

    def __init__(self, original: ClipBundle, split: SplitForward, index_dir: Path, records: list[dict],
                 rows: list[int] | None, cfg: AlphaGridConfig):
        self.split, self.index_dir, self.cfg, self.rows = split, index_dir, cfg, rows
        self.files = [GalleryFile.from_record(r) for r in (records if rows is None else [records[r] for r in rows])]
        self.fingerprint = weights_fingerprint(original)
        names = list(split.stages)
        self.stored = find_stored(index_dir, names, split.split, self.fingerprint) \
            if split.sequential and 0 < split.split < len(names) else None
        store_at = names.index(cfg.store_at) if cfg.store_at in names else split.split
        self.store_at = store_at if rows is None and split.sequential and 0 < store_at <= split.split < len(names) \
            else None
        self.shape: list[int] = []
        self.origin = f"stored at {names[self.stored[0]]}" if self.stored else "decoded"

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, cancel: threading.Event | None, progress: ProgressFn):
        """``(grid positions, activations)`` for every image, in order."""
        n, size = len(self.files), self.cfg.batch_size
        if self.stored is not None:
            start, array = self.stored
            index_rows = np.arange(len(array)) if self.rows is None else np.asarray(self.rows)
            for lo in range(0, n, size):
                check_cancelled(cancel, "alpha grid")
                h = torch.from_numpy(np.ascontiguousarray(array[index_rows[lo : lo + size]]))
                h = self.split.advance(h, start)
                self.shape = list(h.shape[1:])
                yield list(range(lo, min(lo + size, n))), h
            return
        kept: list[np.ndarray] = []
        keep = self.store_at is not None
        for batch in FolderReader(self.files, self.split.bundle.image_size, size, self.cfg.workers):
            check_cancelled(cancel, "alpha grid")
            if batch.failed:
                bad = ", ".join(f"{self.files[i].path} ({reason})" for i, reason in batch.failed[:3])
                raise ValueError(f"gallery files changed since the index was built; rebuild it: {bad}")
            h, at_store = self.split.prefix(batch.images, self.store_at)
            if keep and at_store is not None:
                kept.append(at_store.to(torch.float16).cpu().numpy())
                keep = sum(k.nbytes for k in kept) <= MAX_STORED_BYTES
            self.shape = list(h.shape[1:])
            yield batch.positions, h
            progress("alpha grid", 0.0, f"{batch.positions[-1] + 1}/{n} images decoded")
        if keep and kept and self.store_at is not None:
            stage = self.split.stages[self.store_at]
            if store(self.index_dir, stage, kept, self.fingerprint) is not None:
                self.stored = find_stored(self.index_dir, list(self.split.stages), self.store_at, self.fingerprint)


def embeddings_at(original: ClipBundle, theta_u: State, gallery: GalleryIndex, alpha: float,
                  grid_folder: Path | None = None, batch_size: int = 256) -> np.ndarray:
    """``N,D`` gallery embeddings under theta(alpha): from the grid in ``grid_folder`` when it holds exactly ``alpha``
    for this gallery, else by encoding the gallery once with ``theta(alpha)``."""
    if grid_folder is not None and (Path(grid_folder) / GRID_INFO).is_file():
        grid = AlphaGrid(grid_folder)
        i = grid.nearest(alpha)
        if abs(float(grid.alphas[i]) - alpha) < 1e-6 and len(grid) == len(gallery):
            return grid.embeddings(alpha)
    souped = original.with_visual_state(soup(theta_u, original.visual_state(), alpha))
    encoder = ClipImageEncoder(souped, fold_batchnorm=bool(gallery.info.get("batchnorm_folded")))
    files = [GalleryFile.from_record(r) for r in gallery.records]
    out = np.zeros((len(files), encoder.dim), np.float32)
    for batch in FolderReader(files, encoder.image_size, batch_size):
        if batch.failed:
            changed = Path(files[batch.failed[0][0]].path).name
            raise ValueError(f"gallery files changed since the index was built: {changed}")
        out[batch.positions] = encoder(batch.images)
    return out
