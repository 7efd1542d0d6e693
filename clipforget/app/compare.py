"""Compare finished runs of one workspace: their accuracy-vs-alpha curves overlaid, their metrics at alpha* side by
side, and one prompt's top-k under each run's theta(alpha*)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from plotly.utils import PlotlyJSONEncoder

from clipforget.core.errors import DataError
from clipforget.pipeline.curves import accuracy_traces, style_accuracy_axes

from .explore import RunView

MAX_RUNS = 6


@dataclass
class Comparison:
    """The compare view's content: plotly JSON, a metrics table (rows: sets and the Score; one column per run) and
    per run its title with the prompt's top-k hits at its alpha*."""

    figure_json: str
    headers: list[str]
    rows: list[list[Any]]
    top_k: list[tuple[str, list[dict[str, Any]]]]


def run_label(view: RunView, index: int) -> str:
    return f"#{index + 1} {view.title}"


def compare_runs(views: list[RunView], prompt: str, gallery: str, k: int = 6) -> Comparison:
    """Overlay, table and top-k of two or more opened runs (see :class:`Comparison`)."""
    if not 2 <= len(views) <= MAX_RUNS:
        raise DataError(f"pick between 2 and {MAX_RUNS} finished runs to compare")
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig = go.Figure()
    for i, view in enumerate(views):
        colour = qualitative.D3[i % len(qualitative.D3)]  # one colour per run; the curve's kind is its dash
        for trace in accuracy_traces(view.folder, f"#{i + 1} "):
            dash = {"calibration": "dot", "forget": "solid"}.get(trace["meta"], "dash")
            fig.add_trace(go.Scatter(**{**trace, "line": {"color": colour, "dash": dash}}, legendgroup=str(i)))
        fig.add_vline(x=view.chosen_alpha, line_dash="dot", line_color=colour, annotation_text=f"α*#{i + 1}",
                      annotation_font_color=colour, annotation_y=1 - 0.08 * i, annotation_position="left")
    style_accuracy_axes(fig, height=420)
    headers = ["", *(f"{run_label(v, i)} (α*={v.chosen_alpha:.2f})" for i, v in enumerate(views))]
    columns = [_by_role(v) for v in views]
    rows = [[row, *(c.get(row, "") for c in columns)] for row in ROLE_ROWS]
    top = []
    for i, view in enumerate(views):
        if not prompt or not view.has_grid(gallery):  # a gallery a run was never opened on is not embedded here
            note = "" if not prompt else f" (gallery {gallery} not embedded for this run: open it once)"
            top.append((run_label(view, i) + note, []))
            continue
        found = view.retrieve(prompt, view.chosen_alpha, gallery, k, held_out_only=True)
        top.append((run_label(view, i), found["after"]))
    return Comparison(json.dumps(fig.to_plotly_json(), cls=PlotlyJSONEncoder), headers, rows, top)


ROLE_ROWS = ("forgotten set", "its accuracy: original → θ(α*) %", "kept sets", "kept: lowest ratio", "Score")


def _by_role(view: RunView) -> dict[str, str]:
    """One run's metrics at alpha* by role, so runs whose evaluation sets have different names line up."""
    rows = view.metrics_table(view.chosen_alpha)[1]
    target = [r for r in rows[:-1] if r[1] == "target"]
    kept = [r for r in rows[:-1] if r[1] != "target"]
    lowest = min(kept, key=lambda r: float(r[5]), default=None)
    return {"forgotten set": ", ".join(str(r[0]) for r in target),
            "its accuracy: original → θ(α*) %": ", ".join(f"{r[3]} → {r[4]}" for r in target),
            "kept sets": ", ".join(str(r[0]) for r in kept),
            "kept: lowest ratio": f"{lowest[0]} {float(lowest[5]):.2f}" if lowest else "",
            "Score": str(rows[-1][-1])}
