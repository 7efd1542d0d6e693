"""Run a method end to end and write its run folder.

A run folder holds ``status.json`` (running / done / failed / cancelled, written first and last), ``config.json``,
``layer_ranking.json``, ``alpha_curve.json``, ``metrics.json``, ``model/`` (the final weights, theta(alpha*)) and
``unlearned/`` (theta_unlearned before restoring, for alpha grids). Every file is written atomically and
``status.json`` says ``done`` only after all of them exist, so a killed run is never mistaken for a finished one.
"""

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

from .atomic import write_json
from .data import ImageSet
from .evaluate import ratio, score, zero_shot_accuracy
from .layers import VisualOnly
from .methods import MethodOutput, get_method
from .models import ClipBundle, load_checkpoint, save_checkpoint
from .task import ProgressFn, RunCancelled, UnlearningTask, no_progress


@dataclass
class EvalSet:
    """A zero-shot evaluation set; ``role`` is ``target`` (to forget) or ``retain`` (to keep)."""

    name: str
    images: ImageSet
    classnames: list[str]
    role: str = "retain"


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]
    output: MethodOutput
    final_visual: torch.nn.Module = field(repr=False)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def evaluate_sets(bundle: ClipBundle, visual: torch.nn.Module | None, sets: list[EvalSet]) -> dict[str, float]:
    model = VisualOnly(visual) if visual is not None else None
    return {s.name: zero_shot_accuracy(bundle, s.images, s.classnames, model) for s in sets}


def summarize(original: dict[str, float], final: dict[str, float], sets: list[EvalSet]) -> dict[str, Any]:
    """Per-set acc / acc_original / ratio and the Score (target sets count as 1 - ratio)."""
    zero_shot = {
        s.name: {
            "acc": final[s.name],
            "acc_original": original[s.name],
            "ratio": ratio(final[s.name], original[s.name]),
            "role": s.role,
            "images": len(s.images),
        }
        for s in sets
    }
    targets = [v["ratio"] for v in zero_shot.values() if v["role"] == "target"]
    retained = [v["ratio"] for v in zero_shot.values() if v["role"] != "target"]
    target_ratio = sum(targets) / len(targets) if targets else 0.0
    return {"zero_shot": zero_shot, "score": score(target_ratio, retained)}


def _jsonable(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) else obj


def run_method(
    bundle: ClipBundle,
    task: UnlearningTask,
    out_dir: str | os.PathLike,
    method: str = "ours",
    config: Any = None,
    eval_sets: list[EvalSet] | None = None,
    progress: ProgressFn = no_progress,
    extra: dict[str, Any] | None = None,
) -> RunResult:
    """Unlearn ``task`` with ``method`` on ``bundle`` (left unchanged), evaluate, and write ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_method(method)
    config = config if config is not None else spec.config_cls()
    started = time.time()
    write_json(out / "status.json", {"state": "running", "pid": os.getpid(), "started": started, "method": method})
    eval_sets = eval_sets or []
    skipped = task.forget.skipped + task.retain.skipped
    run_config = {
        "method": method,
        "model": bundle.spec,
        "task": task.name,
        "classnames": task.classnames,
        "sizes": {
            "forget": len(task.forget),
            "retain": len(task.retain),
            "calibration_forget": len(task.calibration_forget) if task.calibration_forget else 0,
            "calibration_retain": len(task.calibration_retain) if task.calibration_retain else 0,
        },
        "config": _jsonable(config),
        "device": str(bundle.device),
        **(extra or {}),
    }
    write_json(out / "config.json", run_config)
    try:
        progress("evaluate", 0.0, "zero-shot accuracy of the original model")
        original = evaluate_sets(bundle, None, eval_sets)
        output = spec.fn(bundle, task, config, progress)
        task.check_cancelled()
        progress("evaluate", 0.5, "zero-shot accuracy of the unlearned model")
        final_visual = copy.deepcopy(bundle.model.visual)
        final_visual.load_state_dict(output.visual_state)
        final_visual.eval()
        final = evaluate_sets(bundle, final_visual, eval_sets)
        metrics = summarize(original, final, eval_sets)
        target = next((s.name for s in eval_sets if s.role == "target"), None)
        retain = next((s.name for s in eval_sets if s.role == "retain"), None)
        metrics = {
            "method": method,
            "task": task.name,
            "target_acc": final.get(target) if target else None,
            "target_acc_original": original.get(target) if target else None,
            "retain_acc": final.get(retain) if retain else None,
            "retain_acc_original": original.get(retain) if retain else None,
            **metrics,
            "alpha": output.alpha,
            "stage_seconds": {k: round(v, 2) for k, v in output.stage_seconds.items()},
            "total_seconds": round(time.time() - started, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped],
            "skipped_count": len(skipped),
        }
        _write_outputs(bundle, out, output, metrics, final_visual)
    except RunCancelled:
        write_json(out / "status.json", {"state": "cancelled", "started": started, "ended": time.time()})
        raise
    except BaseException as err:
        write_json(
            out / "status.json",
            {"state": "failed", "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=5),
             "started": started, "ended": time.time()},
        )
        raise
    write_json(out / "status.json", {"state": "done", "started": started, "ended": time.time(), "method": method})
    return RunResult(out, metrics, output, final_visual)


def _write_outputs(
    bundle: ClipBundle, out: Path, output: MethodOutput, metrics: dict, final_visual: torch.nn.Module
) -> None:
    if output.ranking is not None:
        write_json(out / "layer_ranking.json", output.ranking)
    if output.alpha_curve is not None:
        write_json(out / "alpha_curve.json", {"alpha": output.alpha, "curve": output.alpha_curve})
    write_json(out / "method_log.json", output.log)
    meta = {"run": str(out), "method": metrics["method"], "task": metrics["task"], "alpha": output.alpha,
            "score": metrics["score"], "base_model": bundle.spec}
    save_checkpoint(_with_visual(bundle, output.visual_state), out / "model", metadata=meta)
    if output.unlearned_state is not None:
        save_checkpoint(_with_visual(bundle, output.unlearned_state), out / "unlearned",
                        metadata={**meta, "alpha": 1.0})
    write_json(out / "metrics.json", metrics)


def _with_visual(bundle: ClipBundle, visual_state: dict[str, torch.Tensor]) -> ClipBundle:
    """A bundle sharing everything with ``bundle`` but whose image tower holds ``visual_state`` (for saving)."""
    model = copy.copy(bundle.model)
    model._modules = dict(bundle.model._modules)
    visual = copy.deepcopy(bundle.model.visual)
    visual.load_state_dict(visual_state)
    model._modules["visual"] = visual
    return ClipBundle(model, bundle.tokenizer, bundle.spec, bundle.config, bundle.frozen_prefixes)


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's status; a 'running' run whose process is gone is reported as 'interrupted'."""
    import json

    path = Path(run_dir) / "status.json"
    if not path.is_file():
        return {"state": "missing"}
    status = json.loads(path.read_text(encoding="utf-8"))
    if status.get("state") == "running" and not _pid_alive(status.get("pid")):
        status["state"] = "interrupted"
    return status


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def load_run_model(run_dir: str | os.PathLike, device: str = "cpu", which: str = "model") -> ClipBundle:
    """Load a finished run's final (``model``) or pre-restore (``unlearned``) weights; refuses unfinished runs."""
    status = run_status(run_dir)
    if status.get("state") != "done":
        from .models import ModelLoadError

        raise ModelLoadError(f"run {run_dir} is not finished (state: {status.get('state')})")
    return load_checkpoint(Path(run_dir) / which, device)
