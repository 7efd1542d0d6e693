"""The paper's ablations: reminding steps (Tab. 4) and fixed soup coefficients (Tab. 5)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipforget.core.progress import ProgressFn, no_progress
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.evaluation import evaluate_sets
from clipforget.methods.ours import ThreeStageConfig
from clipforget.methods.registry import seed_config
from clipforget.models.factory import ClipBundle
from clipforget.models.weights import State, clone_state, soup
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.run import run_method


def done_or_run(bundle: ClipBundle, task: UnlearningTask, out: Path, method: str, config: Any,
                eval_sets: list[EvalSet], progress: ProgressFn = no_progress, extra: dict | None = None) -> dict:
    """``metrics.json`` of a finished run folder made the same way, or run it now (interrupted experiments resume)."""
    folder = RunFolder(out)
    if folder.is_done() and not folder.differences(bundle.spec, config):
        return folder.metrics()
    return run_method(bundle, task, out, method, config, eval_sets, progress, extra).metrics


def remind_steps_sweep(bundle: ClipBundle, task: UnlearningTask, eval_sets: list[EvalSet], steps: Sequence[int],
                       out_dir: str | os.PathLike, seed: int = 0, progress: ProgressFn = no_progress) -> list[dict]:
    """Tab. 4: ``ours`` with each number of reminding steps (everything else at its defaults); one run per value."""
    rows = []
    for n in steps:
        cfg = ThreeStageConfig()
        cfg.remind.steps = int(n)
        seed_config(cfg, seed)
        metrics = done_or_run(bundle, task, Path(out_dir) / f"steps{n}", "ours", cfg, eval_sets, progress,
                              {"seed": seed, "ablation": "remind_steps", "value": n})
        rows.append({"steps": int(n), "alpha": metrics["alpha"], "score": metrics["score"],
                     **{k: v["acc"] for k, v in metrics["zero_shot"].items()}})
    return rows


def alpha_sweep(bundle: ClipBundle, unlearned_state: State, eval_sets: list[EvalSet],
                alphas: Sequence[float]) -> list[dict]:
    """Tab. 5: accuracy of every eval set at fixed soup coefficients ``alpha`` (no calibration)."""
    theta_0 = clone_state(bundle.model.visual)
    visual = copy.deepcopy(bundle.model.visual).eval()
    rows = []
    for a in alphas:
        visual.load_state_dict(soup(unlearned_state, theta_0, float(a)))
        rows.append({"alpha": float(a), **evaluate_sets(bundle, visual, eval_sets)})
    return rows
