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

    fig = go.Figure()
    for i, view in enumerate(views):
        for trace in accuracy_traces(view.folder, f"{run_label(view, i)}: "):
            fig.add_trace(go.Scatter(**trace, legendgroup=str(i)))
        fig.add_vline(x=view.chosen_alpha, line_dash="dot", line_color="gray",
                      annotation_text=f"α*#{i + 1}={view.chosen_alpha:.2f}", annotation_position="top left")
    style_accuracy_axes(fig, height=420)
    headers = ["set", *(f"{run_label(v, i)} (α*={v.chosen_alpha:.2f}) %" for i, v in enumerate(views))]
    tables = [dict((row[0], row[4] if row[0] != "Score" else row[5]) for row in v.metrics_table(v.chosen_alpha)[1])
              for v in views]
    names = list(dict.fromkeys(name for table in tables for name in table if name != "Score"))
    rows = [[name, *(table.get(name, "") for table in tables)] for name in [*names, "Score"]]
    top = []
    for i, view in enumerate(views):
        if not prompt or not view.has_grid(gallery):  # a gallery a run was never opened on is not embedded here
            note = "" if not prompt else f" (gallery {gallery} not embedded for this run: open it once)"
            top.append((run_label(view, i) + note, []))
            continue
        found = view.retrieve(prompt, view.chosen_alpha, gallery, k, held_out_only=True)
        top.append((run_label(view, i), found["after"]))
    return Comparison(json.dumps(fig.to_plotly_json(), cls=PlotlyJSONEncoder), headers, rows, top)
