"""Benchmarks: every method on a setting over seeds, as the paper's table and a chart; the ablations' tables.

Layout of an output folder::

    <method>/seed<k>/        a run folder (metrics.json & co, see clipforget.pipeline.folder) per method and seed
    results.md / .json       the table in the paper's layout: "acc ± std (ratio)" per set, Score ± std
    results-<ablation>.md    an ablation's table, same folder so ``alpha`` reuses ``ours/seed<k>``
    chart.html               plotly grouped bars (mean ± std over seeds)

Finished run folders are reused, so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforget.core.atomic import write_json, write_text
from clipforget.core.progress import ProgressFn, no_progress
from clipforget.methods.registry import available_methods, get_method, has_field, method_config
from clipforget.models.factory import ClipBundle, load_checkpoint
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.run import run_method
from clipforget.settings import get_setting

from .ablations import alpha_sweep, done_or_run, remind_steps_sweep
from .merging import continual_merge

ABLATIONS = ("steps", "alpha", "merge")


@dataclass
class BenchPlan:
    """What to benchmark: a setting (with its options and size preset), methods, seeds, the output folder."""

    setting: str
    out: Path
    methods: Sequence[str] = ()  # empty: every registered method
    seeds: int = 3
    size: str = "small"
    options: dict[str, Any] = field(default_factory=dict)
    command: str = "bench"
    overrides: Sequence[str] = ()  # ``--set`` assignments, each applied to the methods whose config has the field


# --- aggregation and rendering (pure functions, tested without models) ------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals)) if len(vals) > 1 else 0.0


def aggregate(runs: dict[str, list[dict]]) -> dict[str, Any]:
    """``{method: [metrics.json, ...]}`` -> sets (in order, with role), original accuracies and per-method stats."""
    sets: dict[str, str] = {}
    original: dict[str, list[float]] = {}
    methods: dict[str, dict] = {}
    for method, metrics_list in runs.items():
        per_set: dict[str, dict[str, list[float]]] = {}
        for m in metrics_list:
            for name, v in m["zero_shot"].items():
                sets.setdefault(name, v["role"])
                original.setdefault(name, []).append(v["acc_original"])
                per_set.setdefault(name, {"acc": [], "ratio": []})
                per_set[name]["acc"].append(v["acc"])
                per_set[name]["ratio"].append(v["ratio"])
        sets_stats = {k: {"acc": _mean_std(v["acc"]), "ratio": _mean_std(v["ratio"])} for k, v in per_set.items()}
        methods[method] = {"seeds": len(metrics_list), "sets": sets_stats,
                           "score": _mean_std([m["score"] for m in metrics_list]),
                           "seconds": _mean_std([m.get("total_seconds") for m in metrics_list]),
                           "alpha": _mean_std([m["alpha"] for m in metrics_list if m.get("alpha") is not None])}
    return {"sets": sets, "original": {k: _mean_std(v) for k, v in original.items()}, "methods": methods}


def mean_std_text(mean: float, std: float | None = None, scale: float = 100.0) -> str:
    """``mean ± std`` in percent (``scale`` 1 for numbers that already are percent); no ± for a single value."""
    if math.isnan(mean):
        return "–"
    return f"{scale * mean:.1f}" + (f" ± {scale * std:.1f}" if std and scale * std >= 0.05 else "")


def markdown_table(agg: dict[str, Any], title: str = "") -> str:
    """The paper's layout: one row per method, "acc ± std (ratio)" per evaluation set (percent), then Score."""
    sets = agg["sets"]
    head = ["Method", *[f"{name} ({'target ↓' if role == 'target' else 'retain ↑'})" for name, role in sets.items()],
            "Score ↑", "seconds"]
    lines = [f"### {title}" if title else "", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| Original | " + " | ".join(mean_std_text(*agg["original"][k]) for k in sets) + " | – | – |")
    best = max((m["score"][0] for m in agg["methods"].values() if not math.isnan(m["score"][0])), default=None)
    for method, m in agg["methods"].items():
        cells = []
        for name in sets:
            acc, rat = m["sets"].get(name, {}).get("acc"), m["sets"].get(name, {}).get("ratio")
            cells.append("–" if acc is None else f"{mean_std_text(*acc)} ({100 * rat[0]:.1f})")
        score = mean_std_text(*m["score"], scale=1.0)
        if best is not None and m["score"][0] == best:
            score = f"**{score}**"
        alpha = f" (α={m['alpha'][0]:.2f})" if not math.isnan(m["alpha"][0]) else ""
        lines.append(f"| {method}{alpha} | " + " | ".join(cells) + f" | {score} | {m['seconds'][0]:.0f} |")
    seeds = sorted({m["seeds"] for m in agg["methods"].values()})
    lines += ["", f"Seeds per method: {', '.join(map(str, seeds))}. Cells: zero-shot accuracy % (mean ± std over "
              "seeds) and, in brackets, the ratio to the original model (capped at 100). Score: mean of "
              "(100 − target ratio) and every retained ratio.", ""]
    return "\n".join(lines).lstrip("\n")


def bar_chart(agg: dict[str, Any], path: Path, title: str) -> None:
    """plotly grouped bars: per evaluation set (and Score) one bar per method, with std error bars."""
    import plotly.graph_objects as go

    sets = list(agg["sets"])
    fig = go.Figure()
    for method, m in agg["methods"].items():
        ys = [100 * m["sets"][s]["acc"][0] if s in m["sets"] else None for s in sets] + [m["score"][0]]
        es = [100 * m["sets"][s]["acc"][1] if s in m["sets"] else None for s in sets] + [m["score"][1]]
        fig.add_bar(name=method, x=[*sets, "Score"], y=ys, error_y={"type": "data", "array": es})
    fig.add_scatter(name="original", x=sets, y=[100 * agg["original"][s][0] for s in sets], mode="markers",
                    marker={"symbol": "line-ew-open", "size": 30, "color": "black"})
    fig.update_layout(barmode="group", title=title, yaxis_title="zero-shot accuracy % / Score", template="plotly_white")
    write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))


def simple_table(rows: list[dict], first: str, title: str) -> str:
    """A markdown table of flat rows (ablations); floats in [0, 1] are shown as percent."""
    if not rows:
        return f"### {title}\n\n(no rows)\n"
    keys = list(rows[0])
    out = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k)
            if isinstance(v, float) and k not in (first, "alpha", "score"):
                cells.append(f"{100 * v:.1f}")
            elif isinstance(v, float):
                cells.append(f"{v:.2f}" if k != "score" else f"{v:.1f}")
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def mean_rows(per_seed: list[list[dict]], key: str) -> list[dict]:
    """Average rows with the same ``key`` value over seeds (numbers only; other fields from the first seed)."""
    out = []
    for i, row in enumerate(per_seed[0]):
        merged = dict(row)
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != key and v is not None:
                vals = [rows[i][k] for rows in per_seed if rows[i].get(k) is not None]
                merged[k] = float(np.mean(vals))
        out.append(merged)
    return out


# --- running -----------------------------------------------------------------------------------------------------


def run_bench(bundle: ClipBundle, plan: BenchPlan, progress: ProgressFn = no_progress, log=print) -> dict[str, Any]:
    """Run (or reuse) every method x seed of ``plan``; write results.md / .json and chart.html; return the stats."""
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    setting = get_setting(plan.setting)
    methods = list(plan.methods) or available_methods()
    for name in methods:
        get_method(name)  # unknown names fail before any work
    for assignment in plan.overrides:  # so do settings no chosen method has, and values of the wrong kind
        takers = [m for m in methods if has_field(get_method(m).config_cls(), assignment.partition("=")[0])]
        if not takers:
            raise ValueError(f"--set {assignment}: none of {', '.join(methods)} has that setting")
        for name in takers:
            method_config(name, 0, [assignment])
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    task = None
    for seed in range(plan.seeds):
        task, eval_sets = setting.build(bundle.image_size, seed, plan.size, **plan.options)
        for method in methods:
            folder = RunFolder(out / method / f"seed{seed}")
            config = method_config(method, seed, plan.overrides)
            if folder.is_done():
                changed = folder.differences(bundle.spec, config)
                if not changed:
                    runs[method].append(folder.metrics())
                    log(f"[{plan.setting}] {method} seed {seed}: reused {folder.path}")
                    continue
                log(f"[{plan.setting}] {method} seed {seed}: {folder.path} was run with other settings "
                    f"({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''}); running it again")
            else:
                log(f"[{plan.setting}] {method} seed {seed}")
            torch.manual_seed(seed)
            result = run_method(bundle, task, folder.path, method, config, eval_sets, progress,
                                extra={"seed": seed, "setting": plan.setting, "size": plan.size,
                                       "command": plan.command, "overrides": list(plan.overrides)})
            runs[method].append(result.metrics)
            log(f"    score {result.metrics['score']:.1f} in {result.metrics['total_seconds']:.0f}s")
    agg = aggregate(runs)
    title = f"{plan.setting} ({task.name if task else ''}, model {bundle.spec})"
    table = markdown_table(agg, title)
    write_text(out / "results.md", table + f"\nCommand: `{plan.command}`\n")
    write_json(out / "results.json", {"setting": plan.setting, "task": task.name if task else None,
                                      "model": bundle.spec, "command": plan.command, **agg})
    bar_chart(agg, out / "chart.html", title)
    log(table)
    return agg


def run_ablation(bundle: ClipBundle, plan: BenchPlan, ablation: str, values: Sequence[float | int | str],
                 progress: ProgressFn = no_progress, log=print) -> list[dict]:
    """Tab. 4 (``steps``: remind steps), Tab. 5 (``alpha``: fixed alphas) or Tab. 6 (``merge``: class names)."""
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
    out = Path(plan.out)
    per_seed: list[list[dict]] = []
    if ablation == "merge":
        for seed in range(plan.seeds):
            per_seed.append(continual_merge(bundle, out / f"seed{seed}", [str(v) for v in values], seed,
                                            plan.size, progress=progress).rows)
        key, title = "model", "Merging (Tab. 6)"
    else:
        setting = get_setting(plan.setting)
        for seed in range(plan.seeds):
            task, eval_sets = setting.build(bundle.image_size, seed, plan.size, **plan.options)
            if ablation == "steps":
                per_seed.append(remind_steps_sweep(bundle, task, eval_sets, [int(v) for v in values],
                                                   out / f"seed{seed}", seed, progress))
                continue
            run_dir = out / "ours" / f"seed{seed}"
            done_or_run(bundle, task, run_dir, "ours", method_config("ours", seed, plan.overrides), eval_sets,
                        progress, {"seed": seed, "overrides": list(plan.overrides)})
            unlearned = load_checkpoint(run_dir / "unlearned").visual_state()
            per_seed.append(alpha_sweep(bundle, unlearned, eval_sets, [float(v) for v in values]))
        key = "steps" if ablation == "steps" else "alpha"
        title = f"{'Remind steps (Tab. 4)' if key == 'steps' else 'Fixed alpha (Tab. 5)'} on {plan.setting}"
    rows = mean_rows(per_seed, key)
    table = simple_table(rows, key, f"{title}, mean over {plan.seeds} seed(s)")
    write_text(out / f"results-{ablation}.md", table)
    write_json(out / f"results-{ablation}.json", {"ablation": ablation, "rows": rows, "per_seed": per_seed})
    log(table)
    return rows
