"""Gallery embeddings under every model soup ``theta(alpha) = alpha theta_unlearned + (1 - alpha) theta_original``.

For a finished run and an index folder, :func:`compute_alpha_grid` writes
``RUN/alpha_grid/<index name>/embeddings.f16.npy`` (float16 ``A,N,D``, row ``i`` = index row ``i``, memory-mappable)
and ``grid.json``. :class:`AlphaGrid` loads it; ``grid.embeddings(alpha)`` is a lookup of the nearest grid point, so
moving the app's alpha slider costs that lookup plus one search.

Computed at the physical limit: the image tower is split into *stages* that run one after another -- its top-level
children in registration order, with plain ``nn.Sequential`` containers opened up (open_clip's ModifiedResNet:
``conv1, bn1, act1, ..., avgpool, layer1.0, layer1.1, ..., layer4.1, attnpool``). A forward hook check on one example
confirms that the tower's forward is exactly that chain (each stage's input *is* the previous stage's output); towers
for which it is not (ViT, ...) fall back to one stage, i.e. a full forward per alpha. Every image goes once through the
stages before the first one whose weights the unlearning changed; those activations are cached (in chunks of at most
``cache_bytes``) and only the remaining stages run once per alpha. Stages run under the same autocast, memory format
and normalisation as :func:`clipforget.zeroshot.image_features`, so the result equals a full re-encode with
``theta(alpha)``.

"Changed" means :func:`clipforget.layers.changed_layers` *and* a largest change above ``rel_tol`` (1e-6) of the
tensor's largest magnitude: the remind stage's EMA moves untouched tensors by a float32 rounding step; those count as
unchanged, i.e. the cached prefix uses ``theta_original`` there (an error of about one float32 ulp per weight).
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import write_json
from .layers import changed_layers, interpolate_states
from .models import ClipBundle, create_model, load_checkpoint
from .task import ProgressFn, no_progress
from .zeroshot import autocast

DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))
GRID_DIR = "alpha_grid"
GRID_EMBEDDINGS = "embeddings.f16.npy"
GRID_INFO = "grid.json"


@dataclass
class AlphaGridConfig:
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    batch_size: int = 256
    workers: int | None = None  # DataLoader decoding processes (None = min(8, CPUs))
    cache_bytes: int = 1 << 30  # activations cached per chunk of the gallery
    rel_tol: float = 1e-6  # relative change below which a tensor counts as unchanged (EMA rounding noise)
    device: str | None = None  # None = cuda if available else cpu


# --- splitting the image tower --------------------------------------------------------------------------------


def flatten_stages(visual: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children in registration order, plain ``nn.Sequential`` opened up recursively (dotted names)."""

    def expand(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        if type(module) is nn.Sequential:
            return [s for name, child in module.named_children() for s in expand(f"{prefix}.{name}", child)]
        return [(prefix, module)]

    return [s for name, child in visual.named_children() for s in expand(name, child)]


@torch.no_grad()
def sequential_stages(visual: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]] | None:
    """:func:`flatten_stages` if ``visual(example)`` is exactly that chain of calls, else ``None``.

    Checked with forward hooks: every stage runs once, in order, on exactly the previous stage's output (the first on
    ``example``), the tower returns the last stage's output, and the tower has no weights outside its stages.
    """
    own = [*visual.parameters(recurse=False), *visual.buffers(recurse=False)]
    if own:
        return None
    stages = flatten_stages(visual)
    calls: list[tuple[str, tuple, Any]] = []
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: calls.append((name, args, out)))
        for name, module in stages
    ]
    try:
        output = visual(example)
    finally:
        for hook in hooks:
            hook.remove()
    if [c[0] for c in calls] != [name for name, _ in stages]:
        return None
    previous: Any = example
    for _, args, out in calls:
        if len(args) != 1 or args[0] is not previous:
            return None
        previous = out
    return stages if output is previous else None


def significant_changes(
    theta_u: dict[str, torch.Tensor], theta_0: dict[str, torch.Tensor], rel_tol: float = 1e-6
) -> tuple[list[str], list[str]]:
    """``(changed, negligible)`` float state keys: changed beyond ``rel_tol`` of the tensor's scale, or only below."""
    changed, negligible = [], []
    for key in changed_layers(theta_u, theta_0):
        a, b = theta_u[key], theta_0[key]
        if not b.is_floating_point():
            continue  # integer buffers (BN counters) are taken from theta_original at every alpha
        delta = (a.float() - b.float()).abs().max().item()
        scale = b.float().abs().max().item()
        (changed if delta > rel_tol * max(scale, 1e-12) else negligible).append(key)
    return changed, negligible


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
    ):
        self.bundle = bundle
        self.visual = copy.deepcopy(bundle.model.visual).eval()
        self.visual.load_state_dict(theta_0)
        size = bundle.image_size
        example = bundle.normalize(torch.zeros((2, 3, size, size), dtype=torch.uint8))
        stages = sequential_stages(self.visual, example)
        self.sequential = stages is not None
        self.stages = stages if stages is not None else [("", self.visual)]
        self.changed, self.negligible = significant_changes(theta_u, theta_0, rel_tol)
        self.split = min((_stage_of(k, self.stages) for k in self.changed), default=len(self.stages))
        if not self.sequential and self.changed:
            self.split = 0
        self.suffix_stages = [stage for _, stage in self.stages[self.split :]]
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

    @property
    def split_name(self) -> str:
        """Name of the first recomputed stage (``"-"`` when the unlearning changed nothing)."""
        return self.stages[self.split][0] if self.split < len(self.stages) else "-"

    def set_alpha(self, alpha: float) -> None:
        """Load ``theta(alpha)`` into the suffix stages (the prefix keeps theta_original)."""
        if alpha != self.alpha:
            state = interpolate_states(self._theta_u, self._theta_0, float(alpha))
            self.visual.load_state_dict(state, strict=False)
            self.alpha = alpha

    @torch.no_grad()
    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the activations entering stage ``split`` (what gets cached)."""
        x = self.bundle.normalize(images).contiguous(memory_format=torch.channels_last)
        with autocast(self.bundle):
            for _, stage in self.stages[: self.split]:
                x = stage(x)
        return x

    @torch.no_grad()
    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """Cached activations -> unit-norm embeddings under the current alpha."""
        with autocast(self.bundle):
            for stage in self.suffix_stages:
                h = stage(h)
        return F.normalize(h.float(), dim=-1)


# --- runs and grids -------------------------------------------------------------------------------------------


def alpha_grid_dir(run_dir: str | os.PathLike, index_name: str) -> Path:
    return Path(run_dir) / GRID_DIR / index_name


def run_models(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[ClipBundle, dict[str, torch.Tensor]]:
    """``(original bundle, theta_unlearned visual state)`` of a finished run.

    theta_original is the run's base model, ``config.json`` ``"model"``; theta_unlearned is ``unlearned/`` (alpha 1),
    or ``model/`` for methods that write no separate unlearned weights.
    """
    from .pipeline import run_status

    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if status.get("state") != "done":
        raise ValueError(f"run {run_dir} is not finished (state: {status.get('state')})")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    original = create_model(config["model"], device=device)
    which = "unlearned" if (run_dir / "unlearned").is_dir() else "model"
    theta_u = load_checkpoint(run_dir / which, device).visual_state()
    return original, theta_u


def compute_alpha_grid(
    run_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    config: AlphaGridConfig | None = None,
    index_name: str | None = None,
    progress: ProgressFn = no_progress,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
) -> Path:
    """Write the alpha grid of ``run_dir`` for the gallery of ``index_dir``; returns the grid folder.

    An existing grid with the same alphas and row count is kept unless ``overwrite``. Setting ``cancel`` stops the
    computation between batches and between alphas with :class:`~clipforget.task.RunCancelled`; the partial file is
    removed and an existing grid is left as it was.
    """
    from .retrieval import METADATA_FILE, read_records

    cfg = config or AlphaGridConfig()
    index_dir = Path(index_dir)
    records = read_records(index_dir / METADATA_FILE)
    out = alpha_grid_dir(run_dir, index_name or index_dir.name)
    if not overwrite and (out / GRID_INFO).is_file():
        old = json.loads((out / GRID_INFO).read_text(encoding="utf-8"))
        if old.get("alphas") == list(cfg.alphas) and old.get("count") == len(records):
            return out
    tmp = out / f".{GRID_EMBEDDINGS}.partial"
    try:
        return _compute_grid(run_dir, index_dir, records, out, tmp, cfg, progress, cancel)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        from .task import RunCancelled

        raise RunCancelled("alpha grid cancelled")


def _compute_grid(run_dir, index_dir: Path, records: list[dict], out: Path, tmp: Path, cfg: AlphaGridConfig,
                  progress: ProgressFn, cancel: threading.Event | None) -> Path:
    from index_builder.reader import FolderReader, GalleryFile

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.perf_counter()
    original, theta_u = run_models(run_dir, device)
    split = SplitForward(original, theta_u, original.visual_state(), cfg.rel_tol)
    files = [GalleryFile.from_record(r) for r in records]
    reader = FolderReader(files, original.image_size, cfg.batch_size, cfg.workers)
    dim = int(original.config["model_cfg"]["embed_dim"])
    alphas = [float(a) for a in cfg.alphas]
    out.mkdir(parents=True, exist_ok=True)
    grid = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(alphas), len(files), dim))
    timing = {"load_models": time.perf_counter() - t_start, "decode_and_prefix": 0.0, "suffix": 0.0}
    chunk: list[tuple[list[int], torch.Tensor]] = []
    chunk_bytes = 0
    done = 0
    cached_shape: list[int] = []

    def flush() -> None:
        nonlocal chunk, chunk_bytes
        t0 = time.perf_counter()
        varying = split.split < len(split.stages)
        all_rows = [r for rows, _ in chunk for r in rows]
        for a_i, alpha in enumerate(alphas):
            if not varying and a_i > 0:
                grid[a_i, all_rows] = grid[0, all_rows]
                continue
            _check(cancel)
            split.set_alpha(alpha)
            for rows, h in chunk:
                grid[a_i, rows] = split.suffix(h).cpu().numpy().astype(np.float16)
        timing["suffix"] += time.perf_counter() - t0
        chunk, chunk_bytes = [], 0

    t0 = time.perf_counter()
    for batch in reader:
        _check(cancel)
        if batch.failed:
            bad = ", ".join(f"{files[i].path} ({reason})" for i, reason in batch.failed[:3])
            raise ValueError(f"gallery files changed since the index was built; rebuild it: {bad}")
        h = split.prefix(batch.images)
        cached_shape = list(h.shape[1:])
        chunk.append((batch.positions, h))
        chunk_bytes += h.numel() * h.element_size()
        done += len(batch.positions)
        if chunk_bytes >= cfg.cache_bytes:
            timing["decode_and_prefix"] += time.perf_counter() - t0
            flush()
            t0 = time.perf_counter()
        progress("alpha grid", done / max(len(files), 1), f"{done}/{len(files)} images")
    timing["decode_and_prefix"] += time.perf_counter() - t0
    if chunk:
        flush()
    grid.flush()
    os.replace(tmp, out / GRID_EMBEDDINGS)
    timing["total"] = time.perf_counter() - t_start
    info = {
        "alphas": alphas,
        "count": len(files),
        "dim": dim,
        "index_dir": str(index_dir.resolve()),
        "index_name": out.name,
        "run": str(Path(run_dir).resolve()),
        "model": original.spec,
        "sequential_split": split.sequential,
        "stages": [name for name, _ in split.stages],
        "first_recomputed_stage": split.split_name,
        "cached_activation_shape": cached_shape,
        "changed_tensors": split.changed,
        "negligible_changes": split.negligible,
        "config": asdict(cfg),
        "seconds": {k: round(v, 3) for k, v in timing.items()},
    }
    write_json(out / GRID_INFO, info)
    return out


class AlphaGrid:
    """A computed alpha grid: ``embeddings(alpha)`` returns the nearest grid point's ``N,D`` float32 embeddings."""

    def __init__(self, folder: str | os.PathLike, cache_size: int = 4):
        self.folder = Path(folder)
        self.info: dict[str, Any] = json.loads((self.folder / GRID_INFO).read_text(encoding="utf-8"))
        self.array = np.load(self.folder / GRID_EMBEDDINGS, mmap_mode="r")
        self.alphas = np.asarray(self.info["alphas"], dtype=np.float64)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._faiss: dict[int, Any] = {}
        self.cache_size = cache_size

    @classmethod
    def load(cls, run_dir: str | os.PathLike, index_name: str) -> AlphaGrid:
        folder = alpha_grid_dir(run_dir, index_name)
        if not (folder / GRID_INFO).is_file():
            raise FileNotFoundError(f"no alpha grid for index '{index_name}' in {run_dir}; compute it first")
        return cls(folder)

    @staticmethod
    def available(run_dir: str | os.PathLike) -> list[str]:
        """Index names that have a finished grid in ``run_dir``."""
        root = Path(run_dir) / GRID_DIR
        return sorted(p.name for p in root.iterdir() if (p / GRID_INFO).is_file()) if root.is_dir() else []

    def __len__(self) -> int:
        return int(self.array.shape[1])

    @property
    def index_dir(self) -> Path:
        return Path(self.info["index_dir"])

    def nearest(self, alpha: float) -> int:
        """Position of the grid point nearest to ``alpha``."""
        return int(np.abs(self.alphas - float(alpha)).argmin())

    def embeddings(self, alpha: float) -> np.ndarray:
        """``N,D`` float32 unit-norm embeddings at the grid point nearest ``alpha`` (a few are kept in memory)."""
        i = self.nearest(alpha)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        emb = np.ascontiguousarray(self.array[i], dtype=np.float32)
        self._cache[i] = emb
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return emb

    def faiss_index(self, alpha: float) -> Any:
        """An exact FAISS inner-product index at the grid point nearest ``alpha``, built on first use."""
        import faiss

        i = self.nearest(alpha)
        if i not in self._faiss:
            emb = self.embeddings(alpha)
            index = faiss.IndexFlatIP(emb.shape[1])
            index.add(emb)
            self._faiss[i] = index
        return self._faiss[i]

    def search(self, text_features: np.ndarray | torch.Tensor, alpha: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` at ``alpha``: exact brute force (faster than building an index per alpha)."""
        from .retrieval import search

        return search(self.embeddings(alpha), text_features, k)
