"""The accuracy-vs-alpha figure of a run (plotly JSON), one place for the app's chart, the report and the compare
view: calibration forget / retain dashed, every evaluation set solid, the calibrated alpha* marked."""

from __future__ import annotations

from typing import Any

from .folder import RunFolder


def accuracy_figure(folder: RunFolder, name_prefix: str = "", chosen_alpha_line: bool = True) -> dict[str, Any]:
    """The run's curves as a plotly figure dict (``name_prefix`` tells runs apart when figures are overlaid)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for trace in accuracy_traces(folder, name_prefix):
        fig.add_trace(go.Scatter(**trace))
    if chosen_alpha_line:
        alpha = folder.chosen_alpha
        fig.add_vline(x=alpha, line_dash="dot", line_color="gray", annotation_text=f"calibrated α*={alpha:.2f}",
                      annotation_position="top left")
    style_accuracy_axes(fig)
    return fig.to_plotly_json()


def accuracy_traces(folder: RunFolder, name_prefix: str = "") -> list[dict[str, Any]]:
    """Keyword arguments of one ``go.Scatter`` per curve of the run; each trace's ``meta`` says its kind
    (``calibration``, ``forget`` or ``keep``) for charts that style them apart."""
    traces = []
    calibration = folder.calibration().get("curve", [])
    for key in ("forget", "retain"):
        if calibration and key in calibration[0]:
            traces.append({"x": [r["alpha"] for r in calibration], "y": [100 * r[key] for r in calibration],
                           "name": f"{name_prefix}calibration {key}", "mode": "lines+markers",
                           "line": {"dash": "dash"}, "meta": "calibration"})
    curve = folder.eval_curve()
    roles = {k: v.get("role") for k, v in folder.metrics().get("zero_shot", {}).items()}
    if curve:
        for key in (k for k in curve[0] if k != "alpha"):
            kind = "forget" if roles.get(key) == "target" else "keep"
            traces.append({"x": [r["alpha"] for r in curve], "y": [100 * r[key] for r in curve],
                           "name": f"{name_prefix}{key} ({kind})", "mode": "lines", "meta": kind})
    return traces


def style_accuracy_axes(fig: Any, height: int = 360) -> None:
    """Axes, size and legend of an accuracy-vs-alpha chart; the y range leaves room above 100 % so a line at 100 %
    is not cut by the plot's top edge."""
    fig.update_layout(xaxis_title="α (0 = original, 1 = unlearned)", yaxis_title="zero-shot accuracy %",
                      xaxis_range=[0, 1], yaxis_range=[-2, 106], height=height,
                      margin={"l": 50, "r": 20, "t": 30, "b": 40}, legend={"orientation": "h", "y": -0.25})
