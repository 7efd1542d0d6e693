"""Exploring a finished run: :class:`RunView` answers "what does theta(alpha) look like" -- accuracy curves, the
metrics table with the Score at any alpha, and retrieval before / after over a gallery.

A view reads the run folder once and keeps what the alpha slider needs in memory: the evaluation curve, the gallery's
alpha grid as float32 and, per prompt, the similarities at every grid alpha -- so a slider move is a row lookup plus
a top-k partition. Models, galleries and prompt embeddings come from the shared caches passed in.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from plotly.utils import PlotlyJSONEncoder

from clipforget.core.atomic import read_json
from clipforget.core.errors import DataError
from clipforget.core.progress import ProgressFn
from clipforget.evaluation import summarize
from clipforget.jobs.model_cache import ModelCache
from clipforget.jobs.profiles import PROFILES, get_profile
from clipforget.jobs.spec import RunSpec
from clipforget.models.weights import State, clone_state
from clipforget.pipeline.curves import accuracy_figure
from clipforget.pipeline.folder import RunFolder, forget_text_subject
from clipforget.pipeline.report import run_gallery_masks, saved_metrics_table, score_text
from clipforget.retrieval.alpha_grid import AlphaGrid, same_alphas
from clipforget.retrieval.search import search, top_k_rows
from index_builder.alpha_grid import AlphaGridConfig, compute_alpha_grid

from . import validate
from .config import AppConfig
from .galleries import Galleries


class RunView:
    """A finished run opened for exploring: curves, metrics at any alpha, retrieval before / after theta(alpha)."""

    def __init__(self, folder: RunFolder, models: ModelCache, galleries: Galleries, config: AppConfig):
        folder.require_same_base()
        self.folder = folder
        self.dir = folder.path
        self.models = models
        self.galleries = galleries
        self.app_config = config
        self.spec = RunSpec.read(folder.path)
        self.task = read_json(folder.path / "task.json")
        self.config = folder.config()
        self.metrics = folder.metrics()
        self.chosen_alpha = folder.chosen_alpha
        self.eval_curve = folder.eval_curve()
        self.model_spec = folder.model_spec or config.model
        self.profile = get_profile(self.spec.profile if self.spec and self.spec.profile in PROFILES else "fast")
        self._states: tuple[dict, dict] | None = None
        self._grids: dict[str, AlphaGrid] = {}
        self._grid_f32: dict[str, np.ndarray] = {}
        self._sims: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
        self._before: dict[tuple[str, str, int, bool], tuple[list[int], list[float]]] = {}
        self._base: dict[str, Any] | None = None
        self._figures: dict[float, str] = {}
        self._gallery_masks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._tables: dict[float, tuple[list[str], list[list[Any]]]] = {}
        self._lock = threading.Lock()

    def _remember(self, cache: dict, key: Any, value: Any, limit: int = 64) -> Any:
        """Keep ``value`` in ``cache``, dropping the oldest entries past ``limit`` (explore events run concurrently,
        :mod:`clipforget.app.ui.blocks`); returns ``value``."""
        with self._lock:
            cache[key] = value
            while len(cache) > limit:
                cache.pop(next(iter(cache)))
        return value

    # weights
    @property
    def model_label(self) -> str:
        """The base model as the user named it (``run:<id>`` rather than a server folder)."""
        return str((self.spec.source or {}).get("model", self.model_spec)) if self.spec else self.model_spec

    @property
    def title(self) -> str:
        return self.spec.title if self.spec else self.dir.name

    @property
    def subject(self) -> str:
        """What to look for first in this run's retrieval: the subgroup's first name the run forgot (``marmoset``),
        else its coarse label (a class forgotten under its own name)."""
        texts = [*self.folder.forget_texts(), *(str(x) for x in self.task.get("forget_labels") or [])]
        return forget_text_subject(texts[0]) if texts else ""

    def states(self) -> tuple[State, State]:
        """(theta_unlearned, theta_original) of the image tower."""
        if self._states is None:
            bundle = self.models.get(self.model_spec)
            self._states = (self.folder.unlearned_state(str(bundle.device)), clone_state(bundle.model.visual))
        return self._states

    # curves and metrics
    def accuracy_at(self, alpha: float) -> dict[str, float]:
        """Each evaluation set's accuracy at ``alpha`` (linear between the curve's alphas)."""
        if not self.eval_curve:
            return {}
        xs = np.array([row["alpha"] for row in self.eval_curve])
        keys = [k for k in self.eval_curve[0] if k != "alpha"]
        return {k: float(np.interp(alpha, xs, [row[k] for row in self.eval_curve])) for k in keys}

    def metrics_table(self, alpha: float) -> tuple[list[str], list[list[Any]]]:
        """Rows ``set, role, images, acc original %, acc at alpha %, ratio`` and a final ``Score`` row."""
        alpha = validate.alpha(alpha)
        found = self._tables.get(round(alpha, 4))
        if found is not None:
            return found
        if abs(alpha - self.chosen_alpha) < 1e-6 and self.metrics.get("zero_shot"):
            return saved_metrics_table(self.folder)  # at α* the saved metrics: the run list's and report's Score
        headers = ["set", "role", "images", "original %", f"θ(α={alpha:.2f}) %", "ratio"]
        acc, original = self.accuracy_at(alpha), self.accuracy_at(0.0)
        saved = self.metrics.get("zero_shot", {})
        final = {n: acc.get(n, s["acc"]) for n, s in saved.items()}  # no curve (older run): saved metrics
        start = {n: original.get(n, s["acc_original"]) for n, s in saved.items()}
        summary = summarize(start, final, {n: s.get("role", "retain") for n, s in saved.items()})
        rows = [[name, v["role"], saved[name].get("images", ""), round(100 * v["acc_original"], 1),
                 round(100 * v["acc"], 1), round(v["ratio"], 3)] for name, v in summary["zero_shot"].items()]
        rows.append(["Score", "", "", "", "", score_text(summary["score"])])
        return self._remember(self._tables, round(alpha, 4), (headers, rows))

    def figure(self, alpha: float):
        """Plotly figure: accuracy vs alpha per set, calibration curves dashed, chosen and current alpha marked."""
        import plotly.graph_objects as go

        return go.Figure(json.loads(self.figure_json(alpha)))

    def _base_figure(self) -> dict[str, Any]:
        """The figure without the current-alpha marker, as plotly's JSON-ready dict (built once per view)."""
        if self._base is None:
            self._base = accuracy_figure(self.folder)
        return self._base

    # retrieval
    def has_grid(self, gallery: str) -> bool:
        return gallery in self._grids or (self.folder.grid_dir(gallery) / "grid.json").is_file()

    def grid(self, gallery: str, progress: ProgressFn | None = None, cancel: threading.Event | None = None):
        """The run's :class:`~clipforget.retrieval.alpha_grid.AlphaGrid` for ``gallery`` (computed once, kept in
        the run folder)."""
        if gallery in self._grids:
            return self._grids[gallery]
        with self._lock:
            if gallery in self._grids:
                return self._grids[gallery]
            folder = self.folder.grid_dir(gallery)
            grid_cfg = AlphaGridConfig(alphas=self.profile.grid_alphas, workers=0, device=self.models.device)
            gal = self.galleries.get(self.model_spec, gallery)
            rows = self.profile.grid_rows(len(gal))
            exists, stale = (folder / "grid.json").is_file(), False
            if exists:
                old = AlphaGrid(folder)
                stale = not same_alphas(old.alphas, list(grid_cfg.alphas)) or old.info.get("rows") != rows
            if not exists or stale:  # a grid made with other alphas or rows is recomputed

                def report(stage: str, fraction: float, message: str) -> None:
                    if progress:
                        progress("curves", fraction, f"gallery {gallery} under θ(α): {message}")

                theta_u, _ = self.states()
                compute_alpha_grid(self.models.get(self.model_spec), theta_u, gal.folder, folder, grid_cfg, report,
                                   overwrite=exists, cancel=cancel, provenance={"run": self.dir.name}, rows=rows)
            self._grids[gallery] = AlphaGrid(folder)
            return self._grids[gallery]

    def _similarities(self, gallery: str, prompt: str) -> np.ndarray:
        """Cosine similarity of ``prompt`` to every gallery image at every grid alpha (``A,N``), cached per prompt.

        One matrix product per new prompt; afterwards a slider move is a row lookup and a top-k partition. While the
        grid is being filled (a run that just finished), only its ready points are computed (rows of the others are
        zero; :meth:`AlphaGrid.nearest` never picks them) and the cache entry lasts until more points are ready.
        """
        grid = self.grid(gallery)
        complete = grid.complete
        key = (gallery, prompt, -1 if complete else len(grid.ready))
        with self._lock:
            if key in self._sims:
                self._sims.move_to_end(key)
                return self._sims[key]
        query = self.galleries.text_embedding(self.model_spec, prompt)
        full = self._grid_f32.get(gallery)
        if complete and full is None and grid.array.nbytes * 2 <= self.app_config.max_grid_bytes:
            full = self._grid_f32[gallery] = np.asarray(grid.array, dtype=np.float32)
        if complete and full is not None:
            sims = (full.reshape(-1, full.shape[-1]) @ query).reshape(full.shape[:2])
        else:  # too large to hold as float32, or partial: one (ready) grid point at a time
            sims = np.zeros(grid.array.shape[:2], np.float32)
            for i in grid.ready:
                sims[i] = grid.embeddings(float(grid.alphas[i])) @ query
        return self._remember(self._sims, key, sims, 32)

    def alphas(self, gallery: str | None = None) -> list[float]:
        """The alphas the slider can show distinct retrieval at (the grid's, else the profile's)."""
        known = gallery is not None and gallery in self._grids
        return [float(a) for a in (self._grids[gallery].alphas if known else self.profile.grid_alphas)]

    def sample_note(self, gallery: str) -> str:
        """Says so when retrieval runs over a sample of the gallery (quick runs on large galleries) or while the
        grid's other alphas are still being computed."""
        grid = self.grid(gallery)
        notes = []
        if not grid.complete:
            notes.append(f"θ(α) of this gallery is ready at {len(grid.ready)} of {len(grid.alphas)} slider steps "
                         f"(α = {', '.join(f'{a:.2f}' for a in grid.ready_alphas)}); the others are being computed, "
                         "and the slider shows the nearest ready one until then")
        if grid.rows is not None:
            notes.append(f"retrieval over a fixed sample of {len(grid.rows):,} of the gallery's "
                         f"{len(self.galleries.get(self.model_spec, gallery)):,} images ({self.profile.name} run)")
        return "; ".join(notes)

    def masks(self, gallery: str) -> tuple[np.ndarray, np.ndarray]:
        """``(trained, forgotten)``, ``N`` booleans each over the gallery's rows: images this run was trained on (a
        run made from a selection of this gallery; none otherwise -- an audit scores a model on the other, held-out
        images only) and images of the forgotten subgroup (:func:`clipforget.pipeline.report.run_gallery_masks`)."""
        found = self._gallery_masks.get(gallery)
        if found is None:
            gal = self.galleries.get(self.model_spec, gallery)
            found = self._gallery_masks[gallery] = run_gallery_masks(self.folder, gal.paths, gal.labels)
        return found

    def _original_top(self, gallery: str, prompt: str, k: int, held_out_only: bool = False
                      ) -> tuple[list[int], list[float]]:
        excluded = self.masks(gallery)[0] if held_out_only else None
        held_out_only = excluded is not None and bool(excluded.any())
        key = (gallery, prompt, k, held_out_only)
        found = self._before.get(key)
        if found is None:
            gal = self.galleries.get(self.model_spec, gallery)
            query = self.galleries.text_embedding(self.model_spec, prompt)
            rows = self.grid(gallery).rows
            if rows is None and not held_out_only:
                scores, ids = search(gal.index, query, k)
                found = ([int(i) for i in ids[0] if i >= 0], [float(x) for x in scores[0]])
            else:  # a sampled grid (the original model's top-k among the same images) or a held-out audit
                rows = np.arange(len(gal)) if rows is None else rows
                sims = gal.embeddings[rows] @ query
                top = top_k_rows(sims, k, excluded[rows] if held_out_only else None)
                found = ([int(rows[i]) for i in top], [float(sims[i]) for i in top])
            self._remember(self._before, key, found)
        return found

    def retrieve(self, prompt: str, alpha: float, gallery: str, k: int | None = None, held_out_only: bool = False
                 ) -> dict[str, Any]:
        """Top-k of ``prompt`` before (original index) and after (theta(alpha)), with what left / entered; every hit
        says whether the run trained on it and whether it is of the forgotten subgroup. ``held_out_only``: images
        the run trained on are left out of both top-ks (an audit's view)."""
        alpha = validate.alpha(alpha)
        prompt = validate.short_text(prompt, "the prompt")
        if not prompt:
            raise DataError("type a prompt, e.g. 'monkey'")
        gal = self.galleries.get(self.model_spec, gallery)
        grid = self.grid(gallery)
        k = min(k or self.app_config.top_k, len(grid))
        trained, forgotten = self.masks(gallery)
        before, before_scores = self._original_top(gallery, prompt, k, held_out_only)
        nearest = grid.nearest(alpha)  # once: a grid being filled may gain points meanwhile
        sims = self._similarities(gallery, prompt)[nearest]
        rows = grid.rows
        grid_rows = np.arange(len(gal)) if rows is None else rows
        top = top_k_rows(sims, k, trained[grid_rows] if held_out_only else None)
        after = [int(grid_rows[i]) for i in top]
        left, entered = set(before) - set(after), set(after) - set(before)

        def items(ids, sc, marks, mark):
            return [{"id": i, "label": gal.labels[i], "path": gal.paths[i], "score": float(s),
                     "mark": mark if i in marks else "", "trained": bool(trained[i]),
                     "forgotten": bool(forgotten[i])} for i, s in zip(ids, sc, strict=True)]

        return {"before": items(before, before_scores, left, "left"),
                "after": items(after, sims[top], entered, "entered"),
                "grid_alpha": float(grid.alphas[nearest]),
                "left": sorted(left), "entered": sorted(entered), "gallery": gallery, "alpha": alpha,
                "held_out_only": held_out_only, "trained_in_gallery": int(trained.sum())}

    def memory_bytes(self) -> int:
        """Roughly what this view holds in memory (float32 grids and per-prompt similarities)."""
        return sum(a.nbytes for a in self._grid_f32.values()) + sum(a.nbytes for a in self._sims.values())

    def figure_json(self, alpha: float) -> str:
        """:meth:`figure` as plotly JSON: the base figure built once, the alpha marker added as plain JSON (a plotly
        figure object costs about 0.1 s to build; the slider moves many times a second), cached per alpha."""
        alpha = validate.alpha(alpha)
        key = round(alpha, 4)
        found = self._figures.get(key)
        if found is None:
            base = self._base_figure()
            layout = base.get("layout", {})
            found = self._remember(self._figures, key, json.dumps({**base, "layout": {
                **layout, "shapes": [*layout.get("shapes", []), _alpha_line(alpha)],
                "annotations": [*layout.get("annotations", []), _alpha_label(alpha)]}},
                cls=PlotlyJSONEncoder))
        return found


def _alpha_line(alpha: float) -> dict[str, Any]:
    """The current-alpha marker: a vertical line over the plot's height (what ``add_vline`` makes)."""
    return {"type": "line", "x0": alpha, "x1": alpha, "xref": "x", "y0": 0, "y1": 1, "yref": "y domain",
            "line": {"color": "crimson"}}


def _alpha_label(alpha: float) -> dict[str, Any]:
    right = alpha > 0.8  # the label stays inside the plot
    return {"text": f"α={alpha:.2f}", "x": alpha, "xref": "x", "y": 0, "yref": "y domain", "showarrow": False,
            "xanchor": "right" if right else "left", "yanchor": "bottom"}
