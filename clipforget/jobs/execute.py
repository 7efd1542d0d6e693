"""The worker side of a run: :func:`execute` turns a :class:`RunSpec` into a finished run folder.

Steps, each reported through ``progress`` (stages ``prepare``, the method's, ``evaluate``, ``curves``): load the
model, build the task from the settings registry with the profile's data sizes, run the method
(:func:`clipforget.pipeline.run.run_method`), compute the evaluation sets' accuracy-vs-alpha curves
(``eval_curve.json``) and the gallery's alpha grid, so that opening the run in the app is instant.

With ``deferred`` (a worker that keeps working after a run is done), the run ends once the grid holds the calibrated
alpha; the rest of the grid is left as a callable in ``deferred`` that the worker runs when it has nothing else to do
(docs/decisions.md D18).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipforget.core.atomic import write_json
from clipforget.core.paths import cache_dir
from clipforget.core.progress import ProgressFn, check_cancelled, no_progress, time_left
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.methods.registry import get_method, seed_config
from clipforget.models.encode import text_classifier
from clipforget.models.factory import ClipBundle
from clipforget.models.weights import clone_state
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.run import RunResult, run_method
from clipforget.retrieval.index import GalleryIndex
from clipforget.settings import get_setting
from clipforget.stages.restore import alpha_curve
from index_builder.alpha_grid import AlphaGridConfig, compute_alpha_grid

from .galleries import ensure_gallery_index
from .model_cache import ModelCache
from .profiles import RunProfile, get_profile
from .spec import RunSpec

EVAL_CURVE = RunFolder.EVAL_CURVE
GALLERY_STEP = "preparing the {gallery} gallery (first start only)"  # an index build, as the page says it
Deferred = Callable[[threading.Event], None]  # work left for after the run: call with an Event that stops it


def loader_workers(device: str) -> int:
    """Decoding processes for gallery builds and alpha grids inside a run: none on the CPU (they would take the
    cores the model needs), a few on a GPU (decoding is then what the GPU waits for)."""
    if str(device).startswith("cuda"):
        return max(1, min(8, (os.cpu_count() or 2) // 2))
    return 0


def build_task(spec: RunSpec, bundle: ClipBundle) -> tuple[UnlearningTask, list[EvalSet]]:
    """The run's task and evaluation sets, from the settings registry at its profile's data size."""
    return get_setting(spec.setting).build(bundle.image_size, spec.seed, get_profile(spec.profile).size,
                                           **spec.options)


def gallery_index(spec: RunSpec, bundle: ClipBundle, models: ModelCache, cache_root: Path,
                  progress: ProgressFn = no_progress, cancel: threading.Event | None = None) -> GalleryIndex:
    """The index of the run's gallery for ``bundle`` (built once per model, with its stored activations); a build
    reports to ``progress`` and stops between batches once ``cancel`` is set."""
    return ensure_gallery_index(cache_root, bundle, str(spec.gallery), spec.gallery_sources,
                                workers=loader_workers(models.device), progress=progress, cancel=cancel)


def gallery_progress(progress: ProgressFn, stage: str, gallery: str, start: float = 0.0, end: float = 1.0
                     ) -> ProgressFn:
    """An index build's progress as ``stage`` from ``start`` to ``end``, in words: "preparing the demo gallery (first
    start only): 3,200 / 21,531 images, about 1 min left"."""
    began = time.perf_counter()

    def report(_: str, fraction: float, message: str) -> None:
        left = time_left(time.perf_counter() - began, fraction)
        progress(stage, start + (end - start) * fraction,
                 f"{GALLERY_STEP.format(gallery=gallery)}: {message}{', ' + left if left else ''}")

    return report


def execute(spec: RunSpec, run_dir: Path, models: ModelCache, progress: ProgressFn,
            cancel: threading.Event | None = None, cache_root: Path | None = None,
            deferred: list[Deferred] | None = None) -> dict[str, Any]:
    """Run ``spec`` into ``run_dir``; returns what the task was made of (counts, class names, skipped files).
    ``deferred``: where to leave the alpha grid's points other than the calibrated alpha (None: compute them now)."""
    cancel = cancel or threading.Event()
    cache_root = Path(cache_root) if cache_root else cache_dir()
    profile = get_profile(spec.profile)
    progress("prepare", 0.05, f"loading model {spec.model}")
    bundle = models.get(spec.model)
    progress("prepare", 0.3, "reading images")
    task, eval_sets = build_task(spec, bundle)
    task.cancel = cancel
    task.check_cancelled()
    described = {"forget_images": len(task.forget), "retain_images": len(task.retain),
                 "calibration_forget": len(task.calibration_forget or []),
                 "calibration_retain": len(task.calibration_retain or []),
                 "classnames": task.classnames, "forget_labels": sorted(set(task.forget.labels)),
                 "eval_sets": {s.name: len(s.images) for s in eval_sets},
                 "skipped": [list(x) for x in task.forget.skipped + task.retain.skipped]}
    write_json(Path(run_dir) / "task.json", described)
    progress("prepare", 0.5, f"{len(task.forget)} forget / {len(task.retain)} retain images")
    method = get_method(spec.method)
    config = copy.deepcopy(profile.method) if spec.method == "ours" else method.config_cls()
    seed_config(config, spec.seed)
    result = run_method(bundle, task, run_dir, spec.method, config, eval_sets, progress,
                        extra={"app": {"owner": spec.owner, "profile": spec.profile}, "setting": spec.setting,
                               "seed": spec.seed, "size": profile.size, "options": spec.options},
                        prefix_cache=profile.prefix_cache, keep_pixels=False)
    try:
        _curves(spec, run_dir, models, progress, cancel, cache_root, profile, bundle, result, deferred)
    finally:
        if result.prefixed is not None:
            result.prefixed.release()
    return described


def warm_up(spec: RunSpec, models: ModelCache, cache_root: Path, stop: threading.Event,
            progress: ProgressFn = no_progress) -> dict[str, float]:
    """Pay ahead what the first run like ``spec`` pays once per model and cache: loading the model, the gallery's
    index (with its stored activations), the setting's decoded data and the class texts of its evaluation sets.
    Stops between steps, and inside the index build between two batches, when ``stop`` is set (a queued run goes
    first); ``progress(step, fraction, message)`` says what it is doing. Returns seconds per step."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    progress("model", 0.0, f"loading the model {spec.model}")
    bundle = models.get(spec.model)
    seconds["model"] = time.perf_counter() - start
    if spec.gallery:
        check_cancelled(stop, "warm-up")
        start = time.perf_counter()
        index_progress = gallery_progress(progress, "gallery_index", str(spec.gallery))
        index_progress("index", 0.0, "listing its images")
        gallery_index(spec, bundle, models, cache_root, index_progress, stop)
        seconds["gallery_index"] = time.perf_counter() - start
    check_cancelled(stop, "warm-up")
    start = time.perf_counter()
    progress("data", 0.0, f"preparing the data of {spec.setting}")
    task, eval_sets = build_task(spec, bundle)
    seconds["data"] = time.perf_counter() - start
    start = time.perf_counter()
    progress("class_texts", 0.0, "encoding class names")
    for classnames in [task.classnames, *(s.classnames for s in eval_sets)]:
        check_cancelled(stop, "warm-up")
        text_classifier(bundle, classnames)
    seconds["class_texts"] = time.perf_counter() - start
    return {k: round(v, 1) for k, v in seconds.items()}


def _curves(spec: RunSpec, run_dir: Path, models: ModelCache, progress: ProgressFn, cancel: threading.Event,
            cache_root: Path, profile: RunProfile, bundle: ClipBundle, result: RunResult,
            deferred: list[Deferred] | None) -> None:
    """The evaluation sets' accuracy-vs-alpha curves (on the run's prefix activations when it had them) and the
    gallery's alpha grid."""
    progress("evaluate", 1.0, "done")
    check_cancelled(cancel)
    unlearned = result.output.unlearned_state or result.output.visual_state
    theta_u, theta_0 = unlearned, clone_state(bundle.model.visual)
    curve_bundle, eval_sets = bundle, result.eval_sets
    if result.prefixed is not None:
        curve_bundle = result.prefixed.bundle
        theta_u, theta_0 = result.prefixed.cache.suffix_state(theta_u), result.prefixed.cache.suffix_state(theta_0)
    rng = np.random.default_rng(0)
    sets = {}
    for s in eval_sets:
        n = len(s.images)
        idx = np.sort(rng.permutation(n)[: profile.curve_max_images]) if n > profile.curve_max_images else None
        sets[s.name] = (s.images.subset(idx) if idx is not None else s.images, s.classnames)
    with_grid = bool(spec.gallery and profile.grid)

    def curve_progress(stage: str, fraction: float, message: str) -> None:
        progress("curves", 0.5 * fraction if with_grid else fraction, f"evaluation curves, {message}")

    curve = alpha_curve(curve_bundle, theta_u, theta_0, sets, list(profile.curve_alphas), curve_progress, cancel)
    write_json(Path(run_dir) / EVAL_CURVE, {"curve": curve, "images": {k: len(v[0]) for k, v in sets.items()}})
    if with_grid:
        index = gallery_index(spec, bundle, models, cache_root,
                              gallery_progress(progress, "curves", str(spec.gallery), 0.5, 0.75))

        def grid_progress(stage: str, fraction: float, message: str) -> None:
            progress("curves", 0.75 + 0.25 * fraction, f"gallery {spec.gallery} under θ(α): {message}")

        folder = RunFolder(run_dir)
        store_at = result.prefixed.cache.cut.first_suffix_stage if result.prefixed is not None else None
        cfg = AlphaGridConfig(alphas=profile.grid_alphas, workers=loader_workers(models.device),
                              device=models.device, store_at=store_at)  # the app slider's steps

        def grid(stop: threading.Event, first_only: bool = False) -> None:
            if not folder.path.is_dir():
                return  # the run was deleted before its grid was filled
            compute_alpha_grid(bundle, unlearned, index.path, folder.grid_dir(spec.gallery), cfg,
                               grid_progress if first_only or deferred is None else no_progress, cancel=stop,
                               provenance={"run": folder.name, "gallery": spec.gallery},
                               rows=profile.grid_rows(len(index)), first=[folder.chosen_alpha],
                               stop_after_first=first_only)

        grid(cancel, first_only=deferred is not None)
        if deferred is not None:
            deferred.append(grid)
    progress("curves", 1.0, "done")
