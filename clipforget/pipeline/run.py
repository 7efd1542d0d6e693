"""Run a method end to end and write its :class:`~clipforget.pipeline.folder.RunFolder`."""

from __future__ import annotations

import copy
import os
import resource
import time
import traceback
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch

from clipforget.core.atomic import write_json
from clipforget.core.errors import RunCancelled
from clipforget.core.progress import ProgressFn, no_progress
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.evaluation import evaluate_sets, original_accuracies, run_warnings, summarize
from clipforget.methods.registry import MethodOutput, get_method
from clipforget.models.factory import ClipBundle, save_checkpoint, weights_digest

from .folder import RunFolder
from .prefixed import PrefixedRun


@dataclass
class RunResult:
    folder: RunFolder
    metrics: dict[str, Any]
    output: MethodOutput
    final_visual: torch.nn.Module = field(repr=False)
    # the run's prefix cache (None: full-network path), kept for follow-up work on the same images (the
    # evaluation curves); call ``release()`` when done
    prefixed: PrefixedRun | None = field(default=None, repr=False)
    eval_sets: list[EvalSet] = field(default_factory=list, repr=False)  # as the method saw them (activations)

    @property
    def out_dir(self) -> Path:
        return self.folder.path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _jsonable(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) else obj


def run_method(bundle: ClipBundle, task: UnlearningTask, out_dir: str | os.PathLike, method: str = "ours",
               config: Any = None, eval_sets: list[EvalSet] | None = None, progress: ProgressFn = no_progress,
               extra: dict[str, Any] | None = None, cache_original: bool = True, prefix_cache: bool = True,
               keep_pixels: bool = True) -> RunResult:
    """Unlearn ``task`` with ``method`` on ``bundle`` (left unchanged), evaluate, and write ``out_dir``.

    The original model's accuracies come from :func:`~clipforget.evaluation.original_accuracies`'s disk cache when
    ``cache_original`` (they are the same for every run of a setting); evaluation seconds are reported apart from
    the method's. With ``prefix_cache`` (the default) every image goes once through the layers before the first one
    the method can change and the method and evaluation work from those activations (:mod:`.prefixed`);
    ``prefix_cache=False`` runs the full network everywhere (for checking). ``keep_pixels=False`` hands the task
    and evaluation sets over: with the prefix cache their pixels are replaced by the activations as they are encoded
    (the objects then hold what :attr:`RunResult.eval_sets` holds), which frees them for a caller that keeps no other
    reference.
    """
    folder = RunFolder(out_dir)
    folder.path.mkdir(parents=True, exist_ok=True)
    spec = get_method(method)
    config = config if config is not None else spec.config_cls()
    started = time.time()
    folder.write_status("running", started=started, method=method)
    eval_sets = eval_sets or []
    skipped = task.forget.skipped + task.retain.skipped
    sizes = {"forget": len(task.forget), "retain": len(task.retain),
             "calibration_forget": len(task.calibration_forget) if task.calibration_forget else 0,
             "calibration_retain": len(task.calibration_retain) if task.calibration_retain else 0}
    run_config = {"method": method, "model": bundle.spec, "model_weights": weights_digest(bundle.spec),
                  "task": task.name, "classnames": task.classnames, "sizes": sizes, "config": _jsonable(config),
                  "device": str(bundle.device), **(extra or {})}
    write_json(folder.path / RunFolder.CONFIG, run_config)
    prefixed = None
    try:
        prefixed = PrefixedRun.plan(bundle, spec, config) if prefix_cache else None
        work_bundle, work_task, work_sets = bundle, task, eval_sets
        if prefixed is not None:
            work_bundle = prefixed.bundle
            work_task, work_sets = prefixed.prepare(task, eval_sets, progress, in_place=not keep_pixels)
        t0 = time.perf_counter()
        progress("evaluate", 0.0, "zero-shot accuracy of the original model")
        original = original_accuracies(work_bundle, work_sets) if cache_original \
            else evaluate_sets(work_bundle, None, work_sets)
        eval_seconds = time.perf_counter() - t0
        output = spec.fn(work_bundle, work_task, config, progress)
        task.check_cancelled()
        t0 = time.perf_counter()
        progress("evaluate", 0.5, "zero-shot accuracy of the unlearned model")
        work_visual = copy.deepcopy(work_bundle.model.visual)
        work_visual.load_state_dict(output.visual_state)
        work_visual.eval()
        final = evaluate_sets(work_bundle, work_visual, work_sets)
        if prefixed is not None:
            output = prefixed.full_output(output)
        final_visual = copy.deepcopy(bundle.model.visual)
        final_visual.load_state_dict(output.visual_state)
        final_visual.eval()
        eval_seconds += time.perf_counter() - t0
        summary = summarize(original, final, {s.name: s.role for s in eval_sets},
                            {s.name: len(s.images) for s in eval_sets})
        target = next((s.name for s in eval_sets if s.role == "target"), None)
        retain = next((s.name for s in eval_sets if s.role == "retain"), None)
        metrics = {
            "method": method,
            "task": task.name,
            "target_acc": final.get(target) if target else None,
            "target_acc_original": original.get(target) if target else None,
            "retain_acc": final.get(retain) if retain else None,
            "retain_acc_original": original.get(retain) if retain else None,
            **summary,
            "alpha": output.alpha,
            "stage_seconds": {k: round(v, 2) for k, v in output.stage_seconds.items()},
            "method_seconds": round(sum(output.stage_seconds.values()), 2),
            "evaluation_seconds": round(eval_seconds, 2),
            "prefix_cache": prefixed.describe() if prefixed is not None else None,
            "total_seconds": round(time.time() - started, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped],
            "skipped_count": len(skipped),
            "warnings": run_warnings(summary["zero_shot"]),
        }
        _write_outputs(bundle, folder, output, metrics)
    except BaseException as err:
        if prefixed is not None:
            prefixed.release()
        if isinstance(err, RunCancelled):
            folder.write_status("cancelled", started=started, ended=time.time(), error="cancelled by the user")
        else:
            folder.write_status("failed", error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(limit=5),
                                started=started, ended=time.time())
        raise
    folder.write_status("done", started=started, ended=time.time(), method=method)
    return RunResult(folder, metrics, output, final_visual, prefixed, work_sets)


def _write_outputs(bundle: ClipBundle, folder: RunFolder, output: MethodOutput, metrics: dict) -> None:
    out = folder.path
    if output.ranking is not None:
        write_json(out / "layer_ranking.json", output.ranking)
    if output.alpha_curve is not None:
        write_json(out / RunFolder.ALPHA_CURVE, {"alpha": output.alpha, "curve": output.alpha_curve})
    write_json(out / RunFolder.METHOD_LOG, output.log)
    meta = {"run": out.name, "method": metrics["method"], "task": metrics["task"], "alpha": output.alpha,
            "score": metrics["score"], "base_model": bundle.spec}
    save_checkpoint(bundle.with_visual_state(output.visual_state), out / "model", metadata=meta)
    if output.unlearned_state is not None:
        save_checkpoint(bundle.with_visual_state(output.unlearned_state), out / "unlearned",
                        metadata={**meta, "alpha": 1.0})
    write_json(out / RunFolder.METRICS, metrics)
