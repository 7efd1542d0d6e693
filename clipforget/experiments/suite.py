"""A suite: one bench per setting cell, then one table and one chart of Score across the cells.

Layout of a suite folder::

    <cell>/                  a bench folder per cell (``clipforget.experiments.bench``): run folders, results.md
    suite.md / suite.json    Score (mean ± std over seeds) per method and cell, and ours' margin over the best baseline
    suite.html               plotly grouped bars: Score per cell, one bar per method, std error bars

Every cell's finished run folders are reused, so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforget.core.atomic import write_json, write_text
from clipforget.core.progress import ProgressFn, no_progress
from clipforget.models.factory import ClipBundle

from .bench import BenchPlan, mean_std_text, run_bench

OURS = "ours"


@dataclass(frozen=True)
class SuiteCell:
    """One column of the suite: a setting with its options, under a short name (the cell's folder)."""

    name: str
    setting: str
    options: dict[str, Any] = field(default_factory=dict)


SUITES: dict[str, tuple[SuiteCell, ...]] = {
    # issue 19's table: the subgroup inside a class, three CIFAR-10 classes, a style and a subgroup of a coarse label
    "paper": (
        SuiteCell("monkeys", "monkeys"),
        SuiteCell("cifar10-airplane", "cifar10", {"forget_class": "airplane"}),
        SuiteCell("cifar10-automobile", "cifar10", {"forget_class": "automobile"}),
        SuiteCell("cifar10-ship", "cifar10", {"forget_class": "ship"}),
        SuiteCell("style", "style"),
        SuiteCell("subgroup", "subgroup"),
    ),
}


def score_matrix(per_cell: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{cell: bench aggregate}`` -> Score mean / std per method and cell, and ours' margin over the best baseline."""
    methods: list[str] = []
    for agg in per_cell.values():
        methods += [m for m in agg["methods"] if m not in methods]
    scores = {m: {c: tuple(agg["methods"][m]["score"]) if m in agg["methods"] else (math.nan, math.nan)
                  for c, agg in per_cell.items()} for m in methods}
    margin: dict[str, dict[str, Any]] = {}
    for cell in per_cell:
        baselines = [(scores[m][cell][0], m) for m in methods if m != OURS and not math.isnan(scores[m][cell][0])]
        ours = scores.get(OURS, {}).get(cell, (math.nan, math.nan))[0]
        best, best_name = max(baselines) if baselines else (math.nan, None)
        margin[cell] = {"best_baseline": best_name, "best_baseline_score": best, "ours": ours,
                        "margin": ours - best if not (math.isnan(ours) or math.isnan(best)) else math.nan}
    return {"cells": list(per_cell), "methods": methods, "scores": scores, "margin": margin}


def suite_markdown(matrix: dict[str, Any], title: str) -> str:
    cells = matrix["cells"]
    lines = [f"### {title}", "", "| Method | " + " | ".join(cells) + " | mean |", "|" + "---|" * (len(cells) + 2)]
    for method in matrix["methods"]:
        row = matrix["scores"][method]
        means = [row[c][0] for c in cells if not math.isnan(row[c][0])]
        mean = sum(means) / len(means) if means else math.nan
        best = [c for c in cells if not math.isnan(row[c][0]) and row[c][0] == max(
            matrix["scores"][m][c][0] for m in matrix["methods"] if not math.isnan(matrix["scores"][m][c][0]))]
        texts = [mean_std_text(*row[c], scale=1.0) for c in cells]
        texts = [f"**{text}**" if c in best else text for c, text in zip(cells, texts, strict=True)]
        lines.append(f"| {method} | " + " | ".join(texts) + f" | {mean_std_text(mean, 0.0, scale=1.0)} |")
    margins = matrix["margin"]
    lines.append("| ours − best baseline | " + " | ".join(
        "–" if math.isnan(margins[c]["margin"]) else f"{margins[c]['margin']:+.1f} ({margins[c]['best_baseline']})"
        for c in cells) + " | |")
    lines += ["", "Cells: Score (mean ± std over seeds); bold: the best method of the column. Per-set accuracies "
              "are in each cell's `results.md`.", ""]
    return "\n".join(lines)


def suite_chart(matrix: dict[str, Any], path: Path, title: str) -> None:
    import plotly.graph_objects as go

    cells = matrix["cells"]
    fig = go.Figure()
    for method in matrix["methods"]:
        row = matrix["scores"][method]
        fig.add_bar(name=method, x=cells, y=[row[c][0] for c in cells],
                    error_y={"type": "data", "array": [row[c][1] for c in cells]})
    fig.update_layout(barmode="group", title=title, yaxis_title="Score (mean over seeds)", yaxis_range=[0, 100],
                      template="plotly_white")
    write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))


def run_suite(bundle: ClipBundle, out: Path, suite: str = "paper", methods: Sequence[str] = (), seeds: int = 3,
              size: str = "small", command: str = "bench --suite", progress: ProgressFn = no_progress,
              log=print, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Bench every cell of ``suite`` into ``out/<cell>``; write suite.md / .json / .html; return the Score matrix."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    out = Path(out)
    per_cell: dict[str, dict[str, Any]] = {}
    for cell in SUITES[suite]:
        plan = BenchPlan(cell.setting, out / cell.name, methods, seeds, size, dict(cell.options), command=command,
                         overrides=tuple(overrides))
        per_cell[cell.name] = run_bench(bundle, plan, progress, log)
    matrix = score_matrix(per_cell)
    title = f"Suite {suite!r}: Score per setting, {seeds} seed(s), size {size}, model {bundle.spec}"
    write_text(out / "suite.md", suite_markdown(matrix, title) + f"\nCommand: `{command}`\n")
    write_json(out / "suite.json", {"suite": suite, "model": bundle.spec, "size": size, "seeds": seeds,
                                    "command": command, **matrix})
    suite_chart(matrix, out / "suite.html", title)
    log(suite_markdown(matrix, title))
    return matrix
