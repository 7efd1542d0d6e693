"""``python -m clipforget bench``: every method on one of the paper's settings, over seeds, as a table and a chart.

Layout of ``--out``::

    <method>/seed<k>/        a run folder (metrics.json & co, see clipforget.pipeline) per method and seed
    results.md / .json       the table in the paper's layout: "acc ± std (ratio)" per set, Score ± std
    results-<ablation>.md    an ablation's table (``--ablation``), same folder so ``alpha`` reuses ``ours/seed<k>``
    chart.html               plotly grouped bars (mean ± std over seeds)

Finished run folders are reused, so an interrupted bench resumes where it stopped. ``--ablation steps|alpha|merge``
runs the paper's Tab. 4 / Tab. 5 / Tab. 6 instead (see clipforget.experiments).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_json, write_text
from .methods import seed_config

ABLATIONS = ("steps", "alpha", "merge")


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    from .experiments import SETTINGS

    p = subparsers.add_parser("bench", help="benchmark methods on a paper setting (table + chart)")
    p.add_argument("--setting", default="cifar10", choices=SETTINGS)
    p.add_argument("--methods", default="all", help="comma separated method names, or 'all'")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (data selection and method seed)")
    p.add_argument("--out", required=True, help="folder for run folders, results.md/json and chart.html")
    p.add_argument("--model", default="embedded", help="embedded | open_clip NAME:TAG | folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--forget-class", default=None, help="class to forget (default per setting)")
    p.add_argument("--forget-style", default="sketch", help="style setting: the style to forget")
    p.add_argument("--imagenet-root", default=None, help="living17: ImageNet folder with <wnid>/ sub-folders")
    p.add_argument("--full-size", action="store_true", help="the larger default set sizes instead of the CPU ones")
    p.add_argument("--ablation", choices=ABLATIONS, default=None,
                   help="steps: Tab. 4 remind steps; alpha: Tab. 5 fixed alphas; merge: Tab. 6 continual merging")
    p.add_argument("--steps", default="5,10,20,30,40,50,100", help="remind steps for --ablation steps")
    p.add_argument("--alphas", default="0.1,0.3,0.5,0.65,0.7,0.9", help="alphas for --ablation alpha")
    p.add_argument("--merge-classes", default="ship,airplane,cat", help="classes for --ablation merge")
    p.add_argument("--data-root", default=None, help="data folder (else $CLIPFORGET_DATA, else ../shared/data)")
    p.add_argument("--cache-dir", default=None, help="cache folder (else $CLIPFORGET_CACHE)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_bench)


def _progress(quiet: bool):
    def progress(stage: str, fraction: float, message: str) -> None:
        if not quiet and (fraction >= 1.0 or fraction == 0.0):
            print(f"    [{stage}] {message}", flush=True)

    return progress


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
        methods[method] = {
            "seeds": len(metrics_list),
            "sets": {k: {"acc": _mean_std(v["acc"]), "ratio": _mean_std(v["ratio"])} for k, v in per_set.items()},
            "score": _mean_std([m["score"] for m in metrics_list]),
            "seconds": _mean_std([m.get("total_seconds") for m in metrics_list]),
            "alpha": _mean_std([m["alpha"] for m in metrics_list if m.get("alpha") is not None]),
        }
    return {"sets": sets, "original": {k: _mean_std(v) for k, v in original.items()}, "methods": methods}


def _pct(mean: float, std: float | None = None, scale: float = 100.0) -> str:
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
    lines.append("| Original | " + " | ".join(_pct(*agg["original"][k]) for k in sets) + " | – | – |")
    best = max((m["score"][0] for m in agg["methods"].values() if not math.isnan(m["score"][0])), default=None)
    for method, m in agg["methods"].items():
        cells = []
        for name in sets:
            acc, rat = m["sets"].get(name, {}).get("acc"), m["sets"].get(name, {}).get("ratio")
            cells.append("–" if acc is None else f"{_pct(*acc)} ({100 * rat[0]:.1f})")
        score = _pct(*m["score"], scale=1.0)
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
    fig.update_layout(barmode="group", title=title, yaxis_title="zero-shot accuracy % / Score",
                      template="plotly_white")
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


# --- the command --------------------------------------------------------------------------------------------------


def run_bench(args: argparse.Namespace) -> int:
    from .experiments import SettingOptions, build_setting
    from .methods import available_methods, get_method
    from .models import create_model
    from .pipeline import run_method, run_status

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    bundle = create_model(args.model, device=device)
    options = SettingOptions(args.forget_class, args.forget_style, args.imagenet_root, not args.full_size)
    progress = _progress(args.quiet)
    command = "python -m clipforget " + " ".join(sys.argv[1:]) if sys.argv else "bench"
    if args.ablation:
        return _run_ablation(args, bundle, options, out, progress)
    methods = available_methods() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m]
    for name in methods:
        get_method(name)  # unknown names fail before any work
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in range(args.seeds):
        task, eval_sets = build_setting(args.setting, bundle.image_size, seed, options)
        for method in methods:
            run_dir = out / method / f"seed{seed}"
            if run_status(run_dir).get("state") == "done" and (run_dir / "metrics.json").is_file():
                runs[method].append(json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")))
                print(f"[{args.setting}] {method} seed {seed}: reused {run_dir}", flush=True)
                continue
            print(f"[{args.setting}] {method} seed {seed}", flush=True)
            torch.manual_seed(seed)
            config = get_method(method).config_cls()
            seed_config(config, seed)
            result = run_method(bundle, task, run_dir, method, config, eval_sets, progress,
                                extra={"seed": seed, "setting": args.setting, "command": command})
            runs[method].append(result.metrics)
            print(f"    score {result.metrics['score']:.1f} in {result.metrics['total_seconds']:.0f}s", flush=True)
    agg = aggregate(runs)
    title = f"{args.setting} ({task.name}, model {bundle.spec})"
    table = markdown_table(agg, title)
    write_text(out / "results.md", table + f"\nCommand: `{command}`\n")
    write_json(out / "results.json", {"setting": args.setting, "task": task.name, "model": bundle.spec,
                                      "command": command, **agg})
    bar_chart(agg, out / "chart.html", title)
    print(table)
    return 0


def _run_ablation(args, bundle, options, out: Path, progress) -> int:
    from .experiments import alpha_sweep, build_setting, continual_merge, remind_steps_sweep
    from .methods.ours import ThreeStageConfig
    from .models import load_checkpoint
    from .pipeline import run_method, run_status

    per_seed: list[list[dict]] = []
    if args.ablation == "merge":
        classes = [c.strip() for c in args.merge_classes.split(",") if c.strip()]
        for seed in range(args.seeds):
            per_seed.append(continual_merge(bundle, out / f"seed{seed}", classes, seed, progress=progress).rows)
        rows, key, title = per_seed[0] if args.seeds == 1 else _mean_merge(per_seed), "model", "Merging (Tab. 6)"
    else:
        for seed in range(args.seeds):
            task, eval_sets = build_setting(args.setting, bundle.image_size, seed, options)
            if args.ablation == "steps":
                steps = [int(s) for s in args.steps.split(",") if s.strip()]
                per_seed.append(remind_steps_sweep(bundle, task, eval_sets, steps, out / f"seed{seed}", seed,
                                                   progress))
            else:
                run_dir = out / "ours" / f"seed{seed}"
                if run_status(run_dir).get("state") != "done":
                    cfg = ThreeStageConfig()
                    seed_config(cfg, seed)
                    run_method(bundle, task, run_dir, "ours", cfg, eval_sets, progress, extra={"seed": seed})
                unlearned = load_checkpoint(run_dir / "unlearned").model.visual.state_dict()
                alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
                per_seed.append(alpha_sweep(bundle, unlearned, eval_sets, alphas))
        key = "steps" if args.ablation == "steps" else "alpha"
        rows = mean_rows(per_seed, key)
        title = f"{'Remind steps (Tab. 4)' if key == 'steps' else 'Fixed alpha (Tab. 5)'} on {args.setting}"
    table = simple_table(rows, key, f"{title}, mean over {args.seeds} seed(s)")
    write_text(out / f"results-{args.ablation}.md", table)
    write_json(out / f"results-{args.ablation}.json", {"ablation": args.ablation, "rows": rows, "per_seed": per_seed})
    print(table)
    return 0


def _mean_merge(per_seed: list[list[dict]]) -> list[dict]:
    return mean_rows(per_seed, "model")
