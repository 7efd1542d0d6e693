"""Builds alpha grids: a gallery's embeddings under every model soup ``theta(alpha)`` of an unlearning run.

:func:`compute_alpha_grid` writes ``<out>/embeddings.f16.npy`` and ``grid.json`` (the format that
:class:`clipforget.retrieval.alpha_grid.AlphaGrid` reads). It is a reader -> encoder -> writer pass like
:func:`index_builder.build.build`, with one encoder per alpha that shares all work the alphas have in common.

Computed at the physical limit: the image tower is split into *stages* that run one after another (see
:func:`clipforget.models.prefix.sequential_stages`). A forward-hook check on one example confirms that the tower's
forward is exactly that chain; towers for which it is not fall back to one stage, i.e. a full forward per alpha.
Every image goes once through the stages before the first one whose weights the unlearning changed; those
activations are cached (in chunks of at most ``cache_bytes``) and only the remaining stages run once per alpha,
under the same autocast, memory format and normalisation as :func:`clipforget.models.encode.image_features`, so the
result equals a full re-encode. Tensors that the remind stage's EMA moved only by float32 rounding count as
unchanged (:func:`significant_changes`).

When the index stores activations at or before that stage (:mod:`index_builder.activations`), they replace decoding
and the prefix (float16 rows: equal to the decoded path to fp16 rounding); a grid that decodes the whole index stores
them for the next one. Grid points can come in two goes (``first`` / ``stop_after_first``): a run publishes the
calibrated alpha first and the rest is filled later into the same file (docs/decisions.md D18).
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
from clipforget.models.prefix import sequential_stages
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


# --- splitting the image tower (the chain of stages: clipforget.models.prefix) --------------------------------


def _stage_of(key: str, stages: Sequence[tuple[str, nn.Module]]) -> int:
    for i, (name, _) in enumerate(stages):
        if key.startswith(name + "."):
            return i
    return 0  # a weight outside every stage: nothing can be cached


class PooledQueryAttention(nn.Module):
    """open_clip's ``AttentionPool2d`` computed for the one token it returns.

    ``AttentionPool2d`` runs full self-attention over the ``HW + 1`` tokens and keeps token 0 (the mean token), so the
    queries, attention rows and output projections of the ``HW`` other tokens are thrown away. Here only token 0's
    query, its attention row and its output projection are computed: the same function (to rounding), and the
    largest single saving on the alpha grid's per-alpha suffix, where the pool is most of the work at 2x2 tokens.
    Reads the wrapped pool's parameters, so loading ``theta(alpha)`` into the tower updates it.
    """

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool
        n, c = x.shape[0], x.shape[1]
        tokens = x.reshape(n, c, -1).permute(0, 2, 1)  # N, HW, C
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + p.positional_embedding[None].to(tokens.dtype)  # N, L, C
        heads = p.num_heads
        d = c // heads
        q = F.linear(tokens[:, 0], p.q_proj.weight, p.q_proj.bias).view(n, heads, 1, d) * d**-0.5
        k = F.linear(tokens, p.k_proj.weight, p.k_proj.bias).view(n, -1, heads, d).transpose(1, 2)
        v = F.linear(tokens, p.v_proj.weight, p.v_proj.bias).view(n, -1, heads, d).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # N, heads, 1, L
        out = (attn.to(v.dtype) @ v).reshape(n, c)
        return F.linear(out, p.c_proj.weight, p.c_proj.bias)


class SplitForward:
    """The image tower as ``prefix`` (stages before ``split``, theta_original) and ``suffix`` (theta(alpha))."""

    def __init__(
        self,
        bundle: ClipBundle,
        theta_u: dict[str, torch.Tensor],
        theta_0: dict[str, torch.Tensor],
        rel_tol: float = 1e-6,
        fold_batchnorm: bool = False,
    ):
        self.bundle = bundle
        self.visual = copy.deepcopy(bundle.model.visual).eval()
        self.visual.load_state_dict(theta_0)
        size = bundle.image_size
        example = bundle.normalize(torch.zeros((2, 3, size, size), dtype=torch.uint8))
        stages = sequential_stages(self.visual, example)
        self.sequential = stages is not None
        names = [name for name, _ in stages] if stages is not None else [""]
        folded = checked_fold(self.visual, probe_input(example)) if fold_batchnorm else None
        self.batchnorm_folded = folded is not None  # as the index was encoded (ClipImageEncoder, D21)
        running = folded if folded is not None else self.visual
        self.stages = [(name, running.get_submodule(name)) for name in names]
        self.changed, self.negligible = significant_changes(theta_u, theta_0, rel_tol)
        self.split = min((_stage_of(k, self.stages) for k in self.changed), default=len(self.stages))
        if not self.sequential and self.changed:
            self.split = 0
        self.suffix_stages = [stage for _, stage in self.stages[self.split :]]
        self._pooled_query = False
        if self.sequential and self.suffix_stages:
            self._use_pooled_query(size)
        suffix_names = tuple(name + "." for name, _ in self.stages[self.split :]) if self.sequential else ("",)
        keys = [k for k in theta_0 if k.startswith(suffix_names)]
        self._theta_u = {k: theta_u[k] for k in keys}
        self._theta_0 = {k: theta_0[k] for k in keys}
        self.alpha: float | None = 0.0

    def _use_pooled_query(self, size: int, tol: float = 2e-2) -> None:
        """Run the last stage as :class:`PooledQueryAttention` when it is open_clip's ``AttentionPool2d`` and the two
        agree on a probe batch (relative max error below ``tol``, i.e. bf16 rounding)."""
        from open_clip.modified_resnet import AttentionPool2d

        pool = self.suffix_stages[-1]
        if not isinstance(pool, AttentionPool2d):
            return
        fast = PooledQueryAttention(pool)
        probe = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        h = self.bundle.normalize(probe).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(self.bundle):
            for _, stage in self.stages[:-1]:
                h = stage(h)
            ref, got = pool(h).float(), fast(h).float()
        if float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-6)) < tol:
            self.suffix_stages[-1] = fast
            self._pooled_query = True

    @property
    def split_name(self) -> str:
        """Name of the first recomputed stage (``"-"`` when the unlearning changed nothing)."""
        return self.stages[self.split][0] if self.split < len(self.stages) else "-"

    def set_alpha(self, alpha: float) -> None:
        """Load ``theta(alpha)`` into the suffix stages (the prefix keeps theta_original)."""
        if alpha != self.alpha:
            state = soup(self._theta_u, self._theta_0, float(alpha))
            self.visual.load_state_dict(state, strict=False)
            if self.batchnorm_folded:  # the suffix runs a folded copy of theta(alpha), as the index ran theta_0
                running = fold_batchnorm(self.visual)
                self.suffix_stages = [running.get_submodule(name) for name, _ in self.stages[self.split :]]
                if self._pooled_query:
                    self.suffix_stages[-1] = PooledQueryAttention(self.suffix_stages[-1])
            self.alpha = alpha

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

    @torch.no_grad()
    def _run(self, stages: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
        def forward(part: torch.Tensor) -> torch.Tensor:
            for stage in stages:
                part = stage(part)
            return part

        with autocast(self.bundle):
            return in_chunks(forward, h)

    @torch.no_grad()
    def advance(self, h: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        """Activations entering stage ``start`` (``<= split``; stored float16) -> those entering stage ``stop``
        (default: ``split``)."""
        x = h.to(self.bundle.device)
        x = x.float() if x.dtype == torch.float16 else x  # stored rows; a tensor from this tower passes as it is
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run([stage for _, stage in self.stages[start : self.split if stop is None else stop]], x)

    @torch.no_grad()
    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """Cached activations -> unit-norm embeddings under the current alpha."""
        return F.normalize(self._run(self.suffix_stages, h).float(), dim=-1)


# --- the grid ------------------------------------------------------------------------------------------------


def compute_alpha_grid(
    original: ClipBundle,
    theta_u: State,
    index_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: AlphaGridConfig | None = None,
    progress: ProgressFn = no_progress,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
    provenance: dict[str, Any] | None = None,
    rows: Sequence[int] | None = None,
    first: Sequence[float] = (),
    stop_after_first: bool = False,
) -> Path:
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
        return {
            "alphas": alphas, "count": count, "dim": dim, "index_dir": str(index_dir.resolve()),
            "index_name": out.name, **provenance, "model": original.spec,
            **({} if len(ready) == len(alphas) else {"ready": sorted(ready)}),
            "sequential_split": split.sequential, "batchnorm_folded": split.batchnorm_folded,
            "stages": [name for name, _ in split.stages],
            "first_recomputed_stage": split.split_name, "cached_activation_shape": source.shape,
            "activations": source.origin, "changed_tensors": split.changed, "negligible_changes": split.negligible,
            "config": asdict(cfg), "seconds": {k: round(v, 3) for k, v in timing.items()},
        }

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
        self.split, self.index_dir, self.cfg = split, index_dir, cfg
        self.rows = rows
        self.files = [GalleryFile.from_record(r) for r in (records if rows is None else [records[r] for r in rows])]
        self.fingerprint = weights_fingerprint(original)
        names = [name for name, _ in split.stages]
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
            stage = self.split.stages[self.store_at][0]
            if store(self.index_dir, stage, kept, self.fingerprint) is not None:
                self.stored = find_stored(self.index_dir, [s for s, _ in self.split.stages], self.store_at,
                                          self.fingerprint)


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
