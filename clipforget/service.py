"""The library side of the web app: workspaces, a background run queue, presets, uploads, exploring and export.

The Gradio UI (:mod:`clipforget.ui`) only calls :class:`AppService`. Everything here works without Gradio:

* **Workspaces.** Every browser gets an unguessable workspace id; uploads and exports live under
  ``<cache>/sessions/<id>/`` and runs record their owner, so two browsers never see each other's data.
* **Runs.** :class:`RunManager` trains on one worker thread (one run at a time; later runs queue and say so), reports
  per-stage progress, and cancels through the task's ``cancel`` event. Runs are written to ``<cache>/runs/<run id>/``
  (the pipeline's run folder plus ``app_run.json`` and ``eval_curve.json``) and listed again after a restart.
* **Explore.** :class:`RunView` answers "what does theta(alpha) look like": accuracy curves vs alpha (calibration and
  evaluation sets), the metrics table with the Score at any alpha, and retrieval over a gallery index before/after.
* **Export.** :meth:`AppService.export` writes theta(alpha) as an open_clip-style safetensors folder with a model card
  (``README.md``) and zips it.
"""

from __future__ import annotations

import copy
import io
import json
import os
import queue
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import data
from .atomic import write_atomic, write_json, write_text
from .data import CIFAR10_CLASSES, DataError
from .evaluate import ratio, score
from .forget import ForgetConfig
from .methods.ours import ThreeStageConfig
from .models import ClipBundle, ModelLoadError, create_model, load_checkpoint, save_checkpoint
from .paths import cache_dir, data_root
from .pipeline import EvalSet, run_method
from .remind import RemindConfig
from .restore import RestoreConfig, alpha_curve, soup
from .retrieval import search
from .settings import Cifar10Sizes, cifar10_class_task, folder_task
from .task import ProgressFn, RunCancelled, UnlearningTask

STAGES = ("prepare", "forget", "remind", "restore", "evaluate", "curves")
STATES_ACTIVE = ("queued", "running")
DEFAULT_GALLERY = "cifar10-test+imagenet"
EXAMPLE_PROMPTS = ("monkey", "marmoset", "airplane")
CURATED_OPEN_CLIP = ("RN50:openai", "RN101:openai", "ViT-B-32:openai", "ViT-B-16:openai", "ViT-B-32:laion2b_s34b_b79k")


# --- configuration -----------------------------------------------------------------------------------------------


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class ServiceConfig:
    """What the app may touch and how much: folders, default model, upload limits (flags or environment)."""

    model: str = "embedded"
    data_root: str | None = None
    cache_dir: str | None = None
    imagenet_root: str | None = None  # ImageFolder (<wnid>/*.JPEG, or train/<wnid>/...) for the LIVING-17 preset
    device: str | None = None  # default: cuda when available
    max_upload_mb: float = field(default_factory=lambda: _env_float("CLIPFORGET_MAX_UPLOAD_MB", 20.0))  # per file
    max_total_upload_mb: float = field(default_factory=lambda: _env_float("CLIPFORGET_MAX_TOTAL_UPLOAD_MB", 500.0))
    max_pixels: int = field(default_factory=lambda: int(_env_float("CLIPFORGET_MAX_PIXELS", 40_000_000)))
    max_files: int = 20_000  # per upload set, zip members included
    galleries: dict[str, str] = field(default_factory=dict)  # extra retrieval galleries: name -> image folder
    default_gallery: str = DEFAULT_GALLERY
    grid_alphas: tuple[float, ...] = tuple(round(a, 2) for a in np.linspace(0, 1, 21))  # = the slider's steps
    top_k: int = 12
    max_grid_bytes: int = 600_000_000  # an opened run's alpha grid is held as float32 up to this size

    def resolved_device(self) -> str:
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class RunProfile:
    """How much work a run does: method settings, preset data sizes, evaluation-curve resolution."""

    name: str
    method: ThreeStageConfig
    sizes: Cifar10Sizes
    curve_alphas: tuple[float, ...]
    curve_max_images: int  # per evaluation set, for the accuracy-vs-alpha curves
    grid: bool = True  # precompute the default gallery's alpha grid at the end of the run


def _same_alphas(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b))


def _alphas(n: int) -> tuple[float, ...]:
    return tuple(round(a, 2) for a in np.linspace(0, 1, n))


PROFILES: dict[str, RunProfile] = {
    # seconds on a laptop CPU: for tests and demos of the UI itself; the model barely changes
    "quick": RunProfile(
        "quick",
        ThreeStageConfig(
            ForgetConfig(steps=2, batch_size=16, fisher_samples=8, fisher_micro_batch=4),
            RemindConfig(align_images=16, align_batch=16, align_steps=1, steps=2, batch_size=16),
            RestoreConfig(alphas=list(_alphas(5))),
        ),
        Cifar10Sizes(forget=24, retain_per_class=6, calibration_forget=12, calibration_retain_per_class=4,
                     eval_per_class=10),
        _alphas(5),
        48,
    ),
    # a few minutes on CPU: the app's default
    "fast": RunProfile(
        "fast",
        ThreeStageConfig(
            ForgetConfig(steps=20, fisher_samples=64),
            # fewer remind steps than the CLI: a faster EMA so theta_ema is not mostly theta_original (0.75**20 < 1 %)
            RemindConfig(align_images=128, align_steps=10, steps=20, ema_decay=0.75),
            RestoreConfig(),
        ),
        Cifar10Sizes(forget=200, retain_per_class=40, calibration_forget=60, calibration_retain_per_class=15,
                     eval_per_class=100),
        _alphas(21),
        200,
    ),
    # the paper's settings (the CLI defaults)
    "full": RunProfile("full", ThreeStageConfig(), Cifar10Sizes(), _alphas(21), 1000),
}


# --- presets -----------------------------------------------------------------------------------------------------

# builder(bundle, profile, service) -> (task, eval sets, description of the data)
TaskBuilder = Callable[[ClipBundle, RunProfile], tuple[UnlearningTask, list[EvalSet], dict[str, Any]]]

PRESETS = {
    "cifar10-class": "CIFAR-10 class forgetting: forget one class, keep the other nine and ImageNet",
    "style": "Style forgetting: forget cars drawn in one style, keep cars in the other styles",
    "subgroup-vehicle": "Subgroup: 'vehicle' without 'airplane' (airplanes stop being vehicles; cars, ships stay)",
    "living17-monkey": "LIVING-17: 'monkey' without 'marmoset' (needs an ImageNet folder, --imagenet)",
}


def preset_sizes(profile: RunProfile, kind: str):
    """Data sizes of the :mod:`clipforget.experiments` settings for a run profile (None: the paper's)."""
    from . import experiments as ex

    if profile.name == "full":
        return None
    quick = profile.name == "quick"
    return {
        "style": ex.StyleSizes(8, 4, 8, 4) if quick else ex.SMALL_STYLE,
        "subgroup": ex.SubgroupSizes(16, 6, 0, 8, 4, 8) if quick else ex.SMALL_SUBGROUP,
        "living17": ex.Living17Sizes(8, 4, 4, 4) if quick else ex.Living17Sizes(40, 15, 20, 20),
    }[kind]


def preset_builder(name: str, cfg: ServiceConfig, option: str | None = None) -> tuple[TaskBuilder, str]:
    """The task builder of preset ``name`` (``option``: the CIFAR class or the style) and a title for the run."""
    from . import experiments as ex
    from .styles import STYLES

    root = cfg.data_root
    if name == "cifar10-class":
        cls = option or "airplane"
        if cls not in CIFAR10_CLASSES:
            raise DataError(f"unknown CIFAR-10 class {cls!r}; choose from {', '.join(CIFAR10_CLASSES)}")

        def build_cifar(bundle: ClipBundle, profile: RunProfile):
            task, sets = cifar10_class_task(cls, bundle.image_size, 0, profile.sizes, root)
            return task, sets, {"forget": f"CIFAR-10 '{cls}' train images", "retain": "the other nine classes"}

        return build_cifar, f"CIFAR-10: forget {cls}"
    if name == "style":
        style = option or "sketch"
        if style not in STYLES or style == "photo":
            raise DataError(f"style must be one of {', '.join(s for s in STYLES if s != 'photo')}")

        def build_style(bundle: ClipBundle, profile: RunProfile):
            sizes = preset_sizes(profile, "style")
            task, sets = ex.style_task("automobile", style, bundle.image_size, 0, sizes, root)
            kept = ", ".join(s for s in STYLES if s != style)
            return task, sets, {"forget": f"CIFAR-10 cars as {style}", "retain": f"cars as {kept}"}

        return build_style, f"Style: forget cars as {style}"
    if name == "subgroup-vehicle":

        def build_subgroup(bundle: ClipBundle, profile: RunProfile):
            task, sets = ex.subgroup_task("airplane", bundle.image_size, 0, preset_sizes(profile, "subgroup"), root)
            return task, sets, {"forget": "CIFAR-10 airplanes labelled 'vehicle'",
                                "retain": "cars, ships and trucks labelled 'vehicle'"}

        return build_subgroup, "Subgroup: vehicle without airplane"
    if name == "living17-monkey":
        if not cfg.imagenet_root:
            raise DataError("the LIVING-17 preset needs ImageNet images: start the app with --imagenet DIR "
                            "(an ImageFolder with one <wnid> sub-folder per class)")
        imagenet = cfg.imagenet_root

        def build_living(bundle: ClipBundle, profile: RunProfile):
            task, sets = ex.living17_task(imagenet, {"monkey": "marmoset"}, bundle.image_size, 0,
                                          preset_sizes(profile, "living17"), root)
            return task, sets, {"forget": "ImageNet marmosets labelled 'monkey'",
                                "retain": "the other monkeys (titi, spider, howler) labelled 'monkey'"}

        return build_living, "LIVING-17: monkey without marmoset"
    raise DataError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")


# --- uploads -----------------------------------------------------------------------------------------------------


@dataclass
class UploadReport:
    """What an upload produced: the folder the images were copied to, counts, and every skipped file with why."""

    folder: Path
    files: int
    images: int
    labels: dict[str, int]
    skipped: list[tuple[str, str]]

    def summary(self, name: str) -> str:
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())) or "none"
        return f"{name}: {self.images} images readable ({labels}); {len(self.skipped)} skipped"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


# --- runs --------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A run in the queue or on the worker; :meth:`snapshot` is what the UI shows."""

    id: str
    owner: str
    title: str
    run_dir: Path
    model: str
    profile: str
    builder: TaskBuilder = field(repr=False)
    gallery: str | None = None
    state: str = "queued"
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    message: str = "waiting for the worker"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    source: dict[str, Any] = field(default_factory=dict)  # preset / upload that defined the task
    data: dict[str, Any] = field(default_factory=dict)  # what the task was made of (filled by the worker)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def progress(self, stage: str, fraction: float, message: str) -> None:
        if stage in self.stages:
            self.stages[stage] = max(0.0, min(1.0, float(fraction)))
            for earlier in STAGES[: STAGES.index(stage)]:
                self.stages[earlier] = 1.0  # stages run in order (a skipped one counts as done)
        self.message = f"{stage}: {message}"

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "state": self.state, "stages": dict(self.stages),
                "message": self.message, "elapsed": round(self.elapsed(), 1), "error": self.error,
                "model": self.model, "profile": self.profile}


class RunManager:
    """One worker thread that runs jobs in order; a job is cancelled through its ``cancel`` event."""

    def __init__(self, service: AppService):
        self.service = service
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._loop, name="clipforget-runs", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
            ahead = sum(1 for j in self.jobs.values() if j.state in STATES_ACTIVE and j is not job)
        if ahead:
            job.message = f"queued: {ahead} run(s) ahead of this one (one training run at a time)"
        self._queue.put(job)
        return job

    def active(self, owner: str) -> Job | None:
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.owner == owner and j.state in STATES_ACTIVE]
        return jobs[-1] if jobs else None

    def latest(self, owner: str) -> Job | None:
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.owner == owner]
        return max(jobs, key=lambda j: j.created) if jobs else None

    def cancel(self, job_id: str, owner: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner or job.state not in STATES_ACTIVE:
            return False
        job.cancel.set()
        if job.state == "queued":
            job.message = "cancelled before it started"
        return True

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job leaves the queue/worker (for scripts and tests)."""
        job = self.jobs[job_id]
        deadline = None if timeout is None else time.time() + timeout
        while job.state in STATES_ACTIVE:
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"run {job_id} still {job.state} after {timeout} s")
            time.sleep(0.05)
        return job

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._run(job)
            except BaseException as err:  # the worker must survive any run
                job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            finally:
                job.ended = time.time()
                self.service._write_app_run(job)

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.state = "cancelled"
            return
        job.state, job.started = "running", time.time()
        self.service._write_app_run(job)
        with self._lock:
            for other in self.jobs.values():
                if other.state == "queued":
                    ahead = sum(1 for j in self.jobs.values() if j.state in STATES_ACTIVE and j.created < other.created)
                    other.message = f"queued: {ahead} run(s) ahead of this one (one training run at a time)"
        try:
            self.service._execute(job)
            job.state, job.message = "done", "finished"
        except RunCancelled:
            job.state, job.message = "cancelled", "cancelled by the user"
        except (DataError, ModelLoadError) as err:
            job.state, job.error, job.message = "failed", str(err), "failed"
        except Exception as err:  # shown in the UI, not as a traceback
            job.state, job.error, job.message = "failed", f"{type(err).__name__}: {err}", "failed"


# --- retrieval galleries -----------------------------------------------------------------------------------------


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


# --- explore: one run --------------------------------------------------------------------------------------------


class RunView:
    """A finished run opened for exploring: curves, metrics at any alpha, retrieval before / after theta(alpha)."""

    def __init__(self, service: AppService, run_dir: Path):
        self.service = service
        self.dir = run_dir
        self.info = _read_json(run_dir / "app_run.json")
        self.config = _read_json(run_dir / "config.json")
        self.metrics = _read_json(run_dir / "metrics.json")
        calib = _read_json(run_dir / "alpha_curve.json")
        self.chosen_alpha = float(calib.get("alpha") if calib.get("alpha") is not None else 1.0)
        self.calibration_curve = calib.get("curve", [])
        self.eval_curve = _read_json(run_dir / "eval_curve.json").get("curve", [])
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

        return gallery in self._grids or _safe_name(gallery) in AlphaGrid.available(self.dir)

    def grid(self, gallery: str, progress: ProgressFn | None = None, cancel: threading.Event | None = None):
        """The run's :class:`~clipforget.alpha_grid.AlphaGrid` for ``gallery`` (computed once, kept in the run)."""
        from .alpha_grid import AlphaGrid, AlphaGridConfig, compute_alpha_grid

        if gallery in self._grids:
            return self._grids[gallery]
        with self._lock:
            if gallery in self._grids:
                return self._grids[gallery]
            name = _safe_name(gallery)
            cfg = self.service.config
            wanted = np.asarray(cfg.grid_alphas, dtype=np.float64)
            exists = name in AlphaGrid.available(self.dir)
            stale = exists and not _same_alphas(AlphaGrid.load(self.dir, name).alphas, wanted)
            if stale or not exists:  # a grid made with other alphas (e.g. another profile) is recomputed
                gal = self.service.gallery(self.model_spec, gallery)

                def report(stage: str, fraction: float, message: str) -> None:
                    if cancel is not None and cancel.is_set():
                        raise RunCancelled("run cancelled")
                    if progress:
                        progress("curves", fraction, f"gallery {gallery} under θ(α): {message}")

                grid_cfg = AlphaGridConfig(alphas=tuple(cfg.grid_alphas), workers=0, device=cfg.resolved_device())
                compute_alpha_grid(self.dir, gal.folder, grid_cfg, name, report, overwrite=stale)
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --- the service -------------------------------------------------------------------------------------------------


class AppService:
    """Everything the web app does, as plain methods (see the module docstring)."""

    def __init__(self, config: ServiceConfig | None = None):
        self.config = config or ServiceConfig()
        self.cache = cache_dir(self.config.cache_dir)
        self.runs_dir = self.cache / "runs"
        self.sessions_dir = self.cache / "sessions"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        self._bundles: dict[str, ClipBundle] = {}
        self._galleries: dict[tuple[str, str], Gallery] = {}
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._texts: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self._gallery_locks: dict[tuple[str, str], threading.Lock] = {}
        self.manager = RunManager(self)

    # workspaces
    @staticmethod
    def new_workspace() -> str:
        return "w" + secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")

    def workspace(self, owner: str) -> Path:
        if not owner or not re.fullmatch(r"[A-Za-z0-9]{8,64}", owner):
            raise DataError("invalid workspace id")
        path = self.sessions_dir / owner
        path.mkdir(parents=True, exist_ok=True)
        return path

    # models
    def bundle(self, spec: str | None = None) -> ClipBundle:
        """The original model for ``spec`` (loaded once; shared read-only by runs and exploring)."""
        spec = spec or self.config.model
        with self._lock:
            if spec not in self._bundles:
                self._bundles[spec] = create_model(spec, self.config.resolved_device(), self.config.cache_dir)
            return self._bundles[spec]

    @staticmethod
    def available_models() -> list[str]:
        """``embedded`` first, then open_clip architectures with pretrained tags (weights may be missing)."""
        names = ["embedded", *CURATED_OPEN_CLIP]
        try:
            import open_clip

            names += [f"{a}:{t}" for a, t in open_clip.list_pretrained()]
        except ImportError:
            pass
        return list(dict.fromkeys(names))

    def text_embedding(self, spec: str, prompt: str) -> np.ndarray:
        key = (spec, prompt)
        with self._lock:
            if key in self._texts:
                self._texts.move_to_end(key)
                return self._texts[key]
        from .zeroshot import encode_text

        vec = encode_text(self.bundle(spec), [prompt])[0].cpu().numpy().astype(np.float32)
        with self._lock:
            self._texts[key] = vec
            while len(self._texts) > 256:
                self._texts.popitem(last=False)
        return vec

    # uploads
    def save_uploads(self, owner: str, kind: str, files: list[str | os.PathLike] | None, upload_id: str) -> Path:
        """Copy uploaded files (images or zips) into ``<workspace>/uploads/<upload_id>/<kind>/``, enforcing limits.

        Files over the size limit are skipped with a reason (listed in ``skipped.json``); an upload whose total size
        is over the total limit, or with too many files, is refused with a :class:`DataError`.
        """
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", upload_id):
            raise DataError("invalid upload id")
        dest = self.workspace(owner) / "uploads" / upload_id / kind
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        skipped: list[tuple[str, str]] = []
        files = [Path(f) for f in files or []]
        limit = self.config.max_upload_mb * 1e6
        total = sum(f.stat().st_size for f in files if f.is_file())
        if total > self.config.max_total_upload_mb * 1e6:
            raise DataError(f"{kind} upload is {total / 1e6:.1f} MB, over the {self.config.max_total_upload_mb:g} MB "
                            "total limit (--max-total-upload-mb / CLIPFORGET_MAX_TOTAL_UPLOAD_MB)")
        count = 0
        for f in files:
            name = _safe_name(Path(f).name)
            size = f.stat().st_size if f.is_file() else 0
            if f.suffix.lower() == ".zip":
                count += self._extract_zip(f, dest / Path(name).stem, skipped, limit)
            elif size > limit:
                skipped.append((f.name, f"too large ({size / 1e6:.1f} MB > {self.config.max_upload_mb:g} MB limit, "
                                        "--max-upload-mb / CLIPFORGET_MAX_UPLOAD_MB)"))
            else:
                shutil.copyfile(f, dest / name)
                count += 1
            if count > self.config.max_files:
                raise DataError(f"{kind} upload has more than {self.config.max_files} files")
        write_json(dest.parent / f"{kind}.skipped.json", skipped)
        return dest

    def _extract_zip(self, archive: Path, dest: Path, skipped: list[tuple[str, str]], limit: float) -> int:
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile:
            skipped.append((archive.name, "not a valid zip file"))
            return 0
        count = 0
        total = 0
        with zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > self.config.max_files:
                raise DataError(f"{archive.name} holds {len(members)} files, over the {self.config.max_files} limit")
            for info in members:
                raw = Path(info.filename.replace("\\", "/"))
                if raw.is_absolute() or ".." in raw.parts:
                    skipped.append((f"{archive.name}/{info.filename}", "unsafe path in archive"))
                    continue
                parts = [p for p in raw.parts if p not in ("", ".")]
                if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                    continue
                target = dest.joinpath(*[_safe_name(p) for p in parts])
                if not _is_within(target, dest):
                    skipped.append((f"{archive.name}/{info.filename}", "unsafe path in archive"))
                    continue
                if info.file_size > limit:
                    skipped.append((f"{archive.name}/{info.filename}",
                                    f"too large ({info.file_size / 1e6:.1f} MB > {self.config.max_upload_mb:g} MB)"))
                    continue
                total += info.file_size
                if total > self.config.max_total_upload_mb * 1e6:
                    raise DataError(f"{archive.name} unpacks to over {self.config.max_total_upload_mb:g} MB")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                count += 1
        return count

    def _flatten_single_folder(self, folder: Path) -> Path:
        """A zip that wraps everything in one top folder (``cats.zip -> cats/...``) reads like its content."""
        while True:
            entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
            if len(entries) == 1 and entries[0].is_dir():
                folder = entries[0]
            else:
                return folder

    def inspect_upload(self, folder: Path, label: str | None, size: int = 32) -> UploadReport:
        """Read an upload folder the way a run will (at a small size): counts per label and skipped files."""
        skipped = [tuple(x) for x in _read_json_list(folder.parent / f"{folder.name}.skipped.json")]
        if not folder.is_dir() or not any(folder.rglob("*")):
            return UploadReport(folder, 0, 0, {}, skipped)
        folder = self._flatten_single_folder(folder)
        images = data.read_folder(folder, size, label, self.config.max_pixels)
        skipped += [(str(Path(p).relative_to(folder)) if _is_within(Path(p), folder) else p, r)
                    for p, r in images.skipped]
        return UploadReport(folder, len(images) + len(images.skipped), len(images), images.label_counts(), skipped)

    def upload_builder(self, owner: str, upload_id: str, label: str, retain_label: str | None = None) -> TaskBuilder:
        """A task builder for the uploaded forget / retain (/ calibration) galleries of ``upload_id``."""
        root = self.workspace(owner) / "uploads" / upload_id
        forget_dir, retain_dir, cal_dir = root / "forget", root / "retain", root / "calibration"
        if not label or not label.strip():
            raise DataError("type the coarse label the forget images should lose (e.g. 'monkey')")
        if not forget_dir.is_dir() or not any(forget_dir.rglob("*")):
            raise DataError("upload the forget gallery first (image files or a zip)")
        if not retain_dir.is_dir() or not any(retain_dir.rglob("*")):
            raise DataError("upload the retain gallery first (image files or a zip)")
        retain_label = (retain_label or "").strip() or None
        retain_root = self._flatten_single_folder(retain_dir)
        if retain_label is None and not any(p.is_dir() for p in retain_root.iterdir()):
            raise DataError("the retain images need labels: type a retain label, or upload a zip with one sub-folder "
                            "per label (e.g. retain.zip/howler monkey/*.jpg)")
        calibration = None
        if cal_dir.is_dir() and any(cal_dir.rglob("*")):
            cal_root = self._flatten_single_folder(cal_dir)
            if not ((cal_root / "forget").is_dir() and (cal_root / "retain").is_dir()):
                raise DataError("the calibration gallery must hold two sub-folders, forget/ and retain/")
            calibration = cal_root
        max_pixels = self.config.max_pixels
        extra_skipped = [tuple(x) for k in ("forget", "retain") for x in _read_json_list(root / f"{k}.skipped.json")]

        def build(bundle: ClipBundle, profile: RunProfile):
            task, sets = folder_task(self._flatten_single_folder(forget_dir), retain_root, label, bundle.image_size,
                                     retain_label=retain_label, calibration_dir=calibration, max_pixels=max_pixels)
            task.forget.skipped = [*task.forget.skipped, *extra_skipped]
            try:
                per_class = max(2, (profile.sizes.eval_per_class or 100) // 5)
                cifar = data.cifar10("test", bundle.image_size, None, per_class, 0, self.config.data_root)
                sets.append(EvalSet("cifar10_test", cifar, list(CIFAR10_CLASSES), "retain"))
            except DataError:
                pass  # no CIFAR-10 on this machine: the held-out sets only
            return task, sets, {"forget": f"uploaded gallery ({len(task.forget)} train images)",
                                "retain": f"uploaded gallery ({len(task.retain)} train images)",
                                "calibration": "uploaded" if calibration else "held out from the uploads"}

        return build

    # runs
    def start_run(self, owner: str, builder: TaskBuilder, title: str, model: str | None = None,
                  profile: str = "fast", gallery: str | None = None, source: dict[str, Any] | None = None) -> Job:
        """Queue a run; returns at once. The job's snapshot tells state, per-stage progress and elapsed time."""
        if profile not in PROFILES:
            raise DataError(f"unknown run profile {profile!r}; choose from {', '.join(PROFILES)}")
        self.workspace(owner)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{_safe_name(title.lower())[:40]}-{secrets.token_hex(3)}"
        job = Job(run_id, owner, title, self.runs_dir / run_id, model or self.config.model, profile, builder,
                  gallery if gallery is not None else self.config.default_gallery)
        job.source = source or {}
        job.run_dir.mkdir(parents=True)
        self._write_app_run(job)
        return self.manager.submit(job)

    def _write_app_run(self, job: Job) -> None:
        info = {"id": job.id, "owner": job.owner, "title": job.title, "model": job.model, "profile": job.profile,
                "state": job.state, "created": job.created, "started": job.started, "ended": job.ended,
                "error": job.error, "gallery": job.gallery, "source": job.source, "data": job.data,
                "stage_seconds": job.stage_seconds}
        write_json(job.run_dir / "app_run.json", info)

    def _execute(self, job: Job) -> None:
        """Worker side of a run: load model, build task, three stages, evaluation curves, gallery grid."""
        profile = PROFILES[job.profile]
        job.progress("prepare", 0.05, f"loading model {job.model}")
        bundle = self.bundle(job.model)
        job.progress("prepare", 0.3, "reading images")
        task, eval_sets, described = job.builder(bundle, profile)
        task.cancel = job.cancel
        task.check_cancelled()
        job.data = {**described, "forget_images": len(task.forget), "retain_images": len(task.retain),
                    "calibration_forget": len(task.calibration_forget or []),
                    "calibration_retain": len(task.calibration_retain or []),
                    "classnames": task.classnames, "eval_sets": {s.name: len(s.images) for s in eval_sets},
                    "skipped": [list(x) for x in task.forget.skipped + task.retain.skipped]}
        job.progress("prepare", 1.0, f"{len(task.forget)} forget / {len(task.retain)} retain images")
        result = run_method(bundle, task, job.run_dir, "ours", copy.deepcopy(profile.method), eval_sets,
                            job.progress, extra={"app": {"owner": job.owner, "profile": job.profile}})
        job.stage_seconds = result.metrics.get("stage_seconds", {})
        job.progress("evaluate", 1.0, "done")
        task.check_cancelled()
        theta_u = result.output.unlearned_state or result.output.visual_state
        theta_0 = {k: v.detach().clone() for k, v in bundle.model.visual.state_dict().items()}
        rng = np.random.default_rng(0)
        sets = {}
        for s in eval_sets:
            n = len(s.images)
            idx = np.sort(rng.permutation(n)[: profile.curve_max_images]) if n > profile.curve_max_images else None
            sets[s.name] = (s.images.subset(idx) if idx is not None else s.images, s.classnames)

        def curve_progress(stage: str, fraction: float, message: str) -> None:
            job.progress("curves", 0.5 * fraction if job.gallery else fraction, f"evaluation curves, {message}")

        curve = alpha_curve(bundle, theta_u, theta_0, sets, list(profile.curve_alphas), curve_progress, job.cancel)
        write_json(job.run_dir / "eval_curve.json",
                   {"curve": curve, "images": {k: len(v[0]) for k, v in sets.items()}})
        if job.gallery and profile.grid:
            view = RunView(self, job.run_dir)
            view.grid(job.gallery, lambda st, f, m: job.progress("curves", 0.5 + 0.5 * f, m), job.cancel)
        job.progress("curves", 1.0, "done")

    def status(self, owner: str) -> dict[str, Any] | None:
        """The owner's running / queued job, else their latest one (None when they have none in this process)."""
        job = self.manager.active(owner) or self.manager.latest(owner)
        return job.snapshot() if job else None

    def job(self, job_id: str, owner: str) -> Job | None:
        job = self.manager.jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def cancel(self, owner: str, job_id: str | None = None) -> bool:
        job = self.manager.jobs.get(job_id) if job_id else self.manager.active(owner)
        return bool(job) and self.manager.cancel(job.id, owner)

    def list_runs(self, owner: str) -> list[dict[str, Any]]:
        """The owner's runs on disk, newest first (state: done / failed / cancelled / interrupted / running)."""
        runs = []
        for folder in self.runs_dir.iterdir() if self.runs_dir.is_dir() else []:
            info = _read_json(folder / "app_run.json")
            if not info or info.get("owner") != owner:
                continue
            live = self.manager.jobs.get(info.get("id", ""))
            state = live.state if live else info.get("state", "unknown")
            if state in STATES_ACTIVE and live is None:
                state = "interrupted"
            metrics = _read_json(folder / "metrics.json") if state == "done" else {}
            runs.append({"id": folder.name, "title": info.get("title", folder.name), "state": state,
                         "created": info.get("created", 0), "model": info.get("model"),
                         "score": metrics.get("score"), "alpha": metrics.get("alpha"), "error": info.get("error")})
        return sorted(runs, key=lambda r: r["created"] or 0, reverse=True)

    def run_dir(self, owner: str, run_id: str) -> Path:
        """The folder of the owner's run ``run_id`` (refuses other owners' runs and odd ids)."""
        if not run_id or not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
            raise DataError("no such run")
        folder = self.runs_dir / run_id
        if _read_json(folder / "app_run.json").get("owner") != owner:
            raise DataError("no such run in this workspace")
        return folder

    def open_run(self, owner: str, run_id: str) -> RunView:
        folder = self.run_dir(owner, run_id)
        info = _read_json(folder / "app_run.json")
        live = self.manager.jobs.get(run_id)
        state = live.state if live else info.get("state")
        if state != "done" or not (folder / "metrics.json").is_file():
            raise DataError(f"run {run_id} is not finished (state: {state})")
        with self._lock:
            if run_id not in self._views:
                self._views[run_id] = RunView(self, folder)
                while len(self._views) > 2:
                    self._views.popitem(last=False)
            self._views.move_to_end(run_id)
            return self._views[run_id]

    # galleries
    def gallery_sources(self, name: str) -> list[Path]:
        """The image folders of gallery ``name`` (the default: CIFAR-10 test + the ImageNet samples, 11k images)."""
        if name in self.config.galleries:
            return [Path(p) for p in self.config.galleries[name].split(os.pathsep)]
        if name == DEFAULT_GALLERY:
            root = data_root(self.config.data_root)
            return [root / "cifar10" / "test", root / "imagenet-samples"]
        raise DataError(f"unknown gallery {name!r}; choose from {', '.join(self.gallery_names())}")

    def gallery_names(self) -> list[str]:
        return list(dict.fromkeys([self.config.default_gallery, *self.config.galleries, DEFAULT_GALLERY]))

    def gallery(self, spec: str, name: str) -> Gallery:
        """Gallery ``name`` indexed with model ``spec``: built once with :mod:`index_builder`, cached, then loaded."""
        from .retrieval import IndexLoadError, load_index

        key = (spec, name)
        if key in self._galleries:
            return self._galleries[key]
        with self._lock:
            lock = self._gallery_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._galleries:
                return self._galleries[key]
            bundle = self.bundle(spec)
            folder = self.cache / "indexes" / _model_key(bundle) / _safe_name(name)
            try:
                index = load_index(folder, mmap=False)
            except IndexLoadError:
                sources = self.gallery_sources(name)
                missing = [str(p) for p in sources if not p.is_dir()]
                if missing:
                    raise DataError(f"gallery {name!r}: folder(s) not found: {', '.join(missing)}") from None
                from index_builder.build import BuildConfig, build
                from index_builder.encoder import ClipImageEncoder

                build(sources, folder, BuildConfig(model=spec, progress=False, workers=0), ClipImageEncoder(bundle))
                index = load_index(folder, mmap=False)
            gal = Gallery(name, index, np.asarray(index.embeddings, dtype=np.float32))
            self._galleries[key] = gal
            return gal

    def thumbnail(self, path: str, size: int = 96) -> Path:
        """A small PNG of a gallery image (cached by path), so result galleries stay light."""
        import hashlib

        digest = hashlib.sha1(f"{path}|{size}".encode()).hexdigest()[:20]
        out = self.cache / "thumbs" / digest[:2] / f"{digest}.png"
        if not out.is_file():
            image = data.open_image(path, self.config.max_pixels)
            image = data.to_model_size(image, size).permute(1, 2, 0).numpy()
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            write_atomic(out, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
        return out

    # export
    def export(self, owner: str, run_id: str, alpha: float | None = None) -> Path:
        """Zip theta(alpha) (default: the calibrated alpha) as ``open_clip_config.json`` + safetensors + README.md."""
        view = self.open_run(owner, run_id)
        alpha = view.chosen_alpha if alpha is None else float(alpha)
        tag = f"alpha{alpha:.2f}".replace(".", "_")
        out = self.workspace(owner) / "exports" / f"{run_id}-{tag}"
        if out.exists():
            shutil.rmtree(out)
        model_dir = out / "model"
        if abs(alpha - view.chosen_alpha) < 1e-9:
            model_dir.mkdir(parents=True)
            for f in (view.dir / "model").iterdir():
                shutil.copyfile(f, model_dir / f.name)
        else:
            bundle = self.bundle(view.model_spec)
            theta_u, theta_0 = view.states()
            from .pipeline import _with_visual

            meta = {"run": run_id, "alpha": alpha, "base_model": view.model_spec, "task": view.config.get("task")}
            save_checkpoint(_with_visual(bundle, soup(theta_u, theta_0, alpha)), model_dir, metadata=meta)
        write_text(model_dir / "README.md", model_card(view, alpha))
        archive = out.with_suffix(".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(model_dir.iterdir()):
                zf.write(f, f"{run_id}/{f.name}")
        shutil.rmtree(out)
        return archive


def _read_json_list(path: Path) -> list:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return value if isinstance(value, list) else []


def _model_key(bundle: ClipBundle) -> str:
    """A short key that changes when the model's weights change (galleries are cached per key)."""
    import hashlib

    folder = Path(bundle.spec) if Path(bundle.spec).is_dir() else None
    if bundle.spec == "embedded":
        from .models import find_embedded_checkpoint

        folder = find_embedded_checkpoint()
    stamp = ""
    if folder is not None and (folder / "open_clip_model.safetensors").is_file():
        st = (folder / "open_clip_model.safetensors").stat()
        stamp = f"{st.st_size}-{st.st_mtime_ns}"
    digest = hashlib.sha1(f"{bundle.spec}|{stamp}".encode()).hexdigest()[:10]
    return f"{_safe_name(bundle.spec.split('/')[-1])}-{digest}"


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
