"""Exploring a finished run: :class:`RunView` (curves, metrics and retrieval at any alpha) and the export's model card.

A view reads the run folder once and keeps what the alpha slider needs in memory: the evaluation curve, the
gallery's alpha grid as float32 and, per prompt, the similarities at every grid alpha -- so a slider move is a row
lookup plus a top-k partition. Models, galleries and text embeddings come from the owning service (shared caches).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data import DataError
from .evaluate import ratio, score
from .models import load_checkpoint
from .paths import safe_name
from .retrieval import search
from .task import ProgressFn

if TYPE_CHECKING:
    from .service import AppService


@dataclass
class Gallery:
    """A retrieval gallery for one model: the FAISS index folder (:mod:`clipforget.retrieval`) and where to cache."""

    name: str
    index: Any  # clipforget.retrieval.GalleryIndex
    embeddings: np.ndarray  # N,D float32 unit norm (the original model), in memory for fast exact search

    @property
    def folder(self) -> Path:
        return Path(self.index.path)

    labels: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = self.labels or self.index.labels
        self.paths = self.paths or self.index.paths

    def __len__(self) -> int:
        return len(self.index)


class RunView:
    """A finished run opened for exploring: curves, metrics at any alpha, retrieval before / after theta(alpha)."""

    def __init__(self, service: AppService, run_dir: Path):
        self.service = service
        self.dir = run_dir
        self.info = read_json(run_dir / "app_run.json")
        self.config = read_json(run_dir / "config.json")
        self.metrics = read_json(run_dir / "metrics.json")
        calib = read_json(run_dir / "alpha_curve.json")
        self.chosen_alpha = float(calib.get("alpha") if calib.get("alpha") is not None else 1.0)
        self.calibration_curve = calib.get("curve", [])
        self.eval_curve = read_json(run_dir / "eval_curve.json").get("curve", [])
        self.model_spec = self.config.get("model", service.config.model)
        self._states: tuple[dict, dict] | None = None
        self._grids: dict[str, Any] = {}  # gallery -> clipforget.alpha_grid.AlphaGrid
        self._grid_f32: dict[str, np.ndarray] = {}
        self._sims: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._before: dict[tuple[str, str, int], tuple[list[int], list[float]]] = {}
        self._figures: dict[float, str] = {}
        self._lock = threading.Lock()

    # weights
    def states(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(theta_unlearned, theta_original) of the image tower."""
        if self._states is None:
            bundle = self.service.bundle(self.model_spec)
            theta_0 = {k: v.detach().clone() for k, v in bundle.model.visual.state_dict().items()}
            unlearned = load_checkpoint(self.dir / "unlearned", bundle.device)
            theta_u = {k: v.detach().clone() for k, v in unlearned.model.visual.state_dict().items()}
            self._states = (theta_u, theta_0)
        return self._states

    # curves and metrics
    def eval_sets(self) -> list[dict[str, Any]]:
        zero_shot = self.metrics.get("zero_shot", {})
        return [{"name": k, **v} for k, v in zero_shot.items()]

    def accuracy_at(self, alpha: float) -> dict[str, float]:
        """Each evaluation set's accuracy at ``alpha`` (linear between the curve's alphas)."""
        if not self.eval_curve:
            return {}
        xs = np.array([row["alpha"] for row in self.eval_curve])
        keys = [k for k in self.eval_curve[0] if k != "alpha"]
        return {k: float(np.interp(alpha, xs, [row[k] for row in self.eval_curve])) for k in keys}

    def metrics_table(self, alpha: float) -> tuple[list[str], list[list[Any]]]:
        """Rows ``set, role, images, acc original %, acc at alpha %, ratio`` and a final ``Score`` row."""
        headers = ["set", "role", "images", "original %", f"θ(α={alpha:.2f}) %", "ratio"]
        acc = self.accuracy_at(alpha)
        original = self.accuracy_at(0.0)
        rows, targets, retained = [], [], []
        for s in self.eval_sets():
            name = s["name"]
            if name in acc:
                a, a0 = acc[name], original[name]
            else:  # no curve (older run): the saved metrics at the chosen alpha
                a, a0 = s["acc"], s["acc_original"]
            r = ratio(a, a0)
            (targets if s.get("role") == "target" else retained).append(r)
            rows.append([name, s.get("role", ""), s.get("images", ""), round(100 * a0, 1), round(100 * a, 1),
                         round(r, 3)])
        target_ratio = sum(targets) / len(targets) if targets else 0.0
        rows.append(["Score", "", "", "", "", round(score(target_ratio, retained), 1)])
        return headers, rows

    def figure(self, alpha: float):
        """Plotly figure: accuracy vs alpha per set, calibration curves dashed, chosen and current alpha marked."""
        import plotly.graph_objects as go

        fig = go.Figure()
        roles = {s["name"]: s.get("role") for s in self.eval_sets()}
        for key, dash in (("forget", "dash"), ("retain", "dash")):
            if self.calibration_curve and key in self.calibration_curve[0]:
                fig.add_trace(go.Scatter(
                    x=[r["alpha"] for r in self.calibration_curve], y=[100 * r[key] for r in self.calibration_curve],
                    name=f"calibration {key}", mode="lines+markers", line={"dash": dash}))
        if self.eval_curve:
            for key in (k for k in self.eval_curve[0] if k != "alpha"):
                label = f"{key} ({'forget' if roles.get(key) == 'target' else 'keep'})"
                fig.add_trace(go.Scatter(x=[r["alpha"] for r in self.eval_curve],
                                         y=[100 * r[key] for r in self.eval_curve], name=label, mode="lines"))
        fig.add_vline(x=self.chosen_alpha, line_dash="dot", line_color="gray",
                      annotation_text=f"calibrated α*={self.chosen_alpha:.2f}", annotation_position="top left")
        fig.add_vline(x=alpha, line_color="crimson", annotation_text=f"α={alpha:.2f}",
                      annotation_position="bottom left" if alpha > 0.8 else "bottom right")
        fig.update_layout(xaxis_title="α (0 = original, 1 = unlearned)", yaxis_title="zero-shot accuracy %",
                          xaxis_range=[0, 1], yaxis_range=[0, 100], height=360, margin={"l": 50, "r": 20, "t": 30,
                          "b": 40}, legend={"orientation": "h", "y": -0.25})
        return fig

    # retrieval
    def has_grid(self, gallery: str) -> bool:
        from .alpha_grid import AlphaGrid

        return gallery in self._grids or safe_name(gallery) in AlphaGrid.available(self.dir)

    def grid(self, gallery: str, progress: ProgressFn | None = None, cancel: threading.Event | None = None):
        """The run's :class:`~clipforget.alpha_grid.AlphaGrid` for ``gallery`` (computed once, kept in the run)."""
        from .alpha_grid import AlphaGrid, AlphaGridConfig, compute_alpha_grid

        if gallery in self._grids:
            return self._grids[gallery]
        with self._lock:
            if gallery in self._grids:
                return self._grids[gallery]
            name = safe_name(gallery)
            cfg = self.service.config
            wanted = np.asarray(cfg.grid_alphas, dtype=np.float64)
            exists = name in AlphaGrid.available(self.dir)
            stale = exists and not same_alphas(AlphaGrid.load(self.dir, name).alphas, wanted)
            if stale or not exists:  # a grid made with other alphas (e.g. another profile) is recomputed
                gal = self.service.gallery(self.model_spec, gallery)

                def report(stage: str, fraction: float, message: str) -> None:
                    if progress:
                        progress("curves", fraction, f"gallery {gallery} under θ(α): {message}")

                grid_cfg = AlphaGridConfig(alphas=tuple(cfg.grid_alphas), workers=0, device=cfg.resolved_device())
                compute_alpha_grid(self.dir, gal.folder, grid_cfg, name, report, overwrite=stale, cancel=cancel)
            self._grids[gallery] = AlphaGrid.load(self.dir, name)
            return self._grids[gallery]

    def gallery_embeddings(self, gallery: str, alpha: float) -> np.ndarray:
        """Gallery embeddings under theta(alpha) at the grid point nearest ``alpha`` (the slider's step)."""
        return self.grid(gallery).embeddings(alpha)

    def _similarities(self, gallery: str, prompt: str) -> np.ndarray:
        """Cosine similarity of ``prompt`` to every gallery image at every grid alpha (``A,N``), cached per prompt.

        One matrix product per new prompt; afterwards a slider move is a row lookup and a top-k partition.
        """
        key = (gallery, prompt)
        with self._lock:
            if key in self._sims:
                self._sims.move_to_end(key)
                return self._sims[key]
        grid = self.grid(gallery)
        query = self.service.text_embedding(self.model_spec, prompt)
        full = self._grid_f32.get(gallery)
        if full is None and grid.array.nbytes * 2 <= self.service.config.max_grid_bytes:
            full = self._grid_f32[gallery] = np.asarray(grid.array, dtype=np.float32)
        if full is not None:
            sims = (full.reshape(-1, full.shape[-1]) @ query).reshape(full.shape[:2])
        else:  # too large to hold as float32: one grid point at a time
            sims = np.stack([grid.embeddings(float(a)) @ query for a in grid.alphas])
        with self._lock:
            self._sims[key] = sims
            while len(self._sims) > 32:
                self._sims.popitem(last=False)
        return sims

    def _original_top(self, gallery: str, prompt: str, k: int) -> tuple[list[int], list[float]]:
        key = (gallery, prompt, k)
        if key not in self._before:
            gal = self.service.gallery(self.model_spec, gallery)
            scores, ids = search(gal.index, self.service.text_embedding(self.model_spec, prompt), k)
            self._before[key] = ([int(i) for i in ids[0] if i >= 0], [float(x) for x in scores[0]])
            while len(self._before) > 64:
                self._before.pop(next(iter(self._before)))
        return self._before[key]

    def retrieve(self, prompt: str, alpha: float, gallery: str, k: int | None = None) -> dict[str, Any]:
        """Top-k of ``prompt`` before (original index) and after (theta(alpha)), with what left / entered."""
        if not prompt or not prompt.strip():
            raise DataError("type a prompt, e.g. 'monkey'")
        prompt = prompt.strip()
        gal = self.service.gallery(self.model_spec, gallery)
        k = min(k or self.service.config.top_k, len(gal))
        before, before_scores = self._original_top(gallery, prompt, k)
        sims = self._similarities(gallery, prompt)[self.grid(gallery).nearest(alpha)]
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.lexsort((top, -sims[top]))]
        after = [int(i) for i in top]
        left, entered = set(before) - set(after), set(after) - set(before)

        def items(ids, sc, marks, mark):
            return [{"id": i, "label": gal.labels[i], "path": gal.paths[i], "score": float(s),
                     "mark": mark if i in marks else ""} for i, s in zip(ids, sc, strict=True)]

        return {"before": items(before, before_scores, left, "left"),
                "after": items(after, sims[top], entered, "entered"),
                "left": sorted(left), "entered": sorted(entered), "gallery": gallery, "alpha": alpha}

    def figure_json(self, alpha: float) -> str:
        """:meth:`figure` as plotly JSON, cached per alpha (the slider revisits the same 21 values)."""
        key = round(float(alpha), 4)
        if key not in self._figures:
            self._figures[key] = self.figure(alpha).to_json()
        return self._figures[key]


def same_alphas(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}




def model_card(view: RunView, alpha: float) -> str:
    """The exported model's README.md: what was forgotten, with which data, alpha and metrics."""
    info, cfg = view.info, view.config
    described = info.get("data", {})
    headers, rows = view.metrics_table(alpha)
    table = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                      + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows])
    sizes = cfg.get("sizes", {})
    return f"""# clipforget model: {info.get('title', view.dir.name)}

A CLIP model whose image tower was made to forget a subgroup with clipforget's three-stage method
(forget: relative-Fisher LoRA -> remind: BN-aligned knowledge distillation with EMA -> restore: model soup).
The text tower is unchanged.

- **Forgotten:** {described.get('forget', cfg.get('task'))} (task `{cfg.get('task')}`)
- **Kept:** {described.get('retain', '')}
- **Base model:** `{cfg.get('model')}`
- **Data:** {sizes.get('forget', '?')} forget / {sizes.get('retain', '?')} retain training images; calibration
  {sizes.get('calibration_forget', '?')} forget / {sizes.get('calibration_retain', '?')} retain images
  ({described.get('calibration', 'held out, never trained on')});
  zero-shot classes: {', '.join(cfg.get('classnames', []))}
- **alpha:** {alpha:.2f} (theta = alpha * theta_unlearned + (1 - alpha) * theta_original; calibrated alpha* =
  {view.chosen_alpha:.2f})
- **Run profile:** {info.get('profile')}; run id `{view.dir.name}`

## Zero-shot accuracy (evaluation sets, at this alpha)

{table}

Score = mean of (1 - target ratio) and every kept set's ratio, ratio = min(acc / acc_original, 1), in percent.

## Loading

```python
from clipforget.models import load_checkpoint
bundle = load_checkpoint("this-folder")  # bundle.model is an open_clip CLIP / CustomTextCLIP
```

or on the command line: `python -m clipforget ... --model this-folder`. The folder holds `open_clip_config.json`
(open_clip's model config under `model_cfg`) and `open_clip_model.safetensors`; weights of frozen parts shipped with
their Python package (listed in `frozen_prefixes`) are left out.
"""
