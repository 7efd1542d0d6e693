"""What the page shows, as data Gradio can take: run status HTML, run choices, thumbnails, tables, previews.

No Gradio import: these are plain functions of snapshots and results, tested without a server. User-typed words go
through :func:`clipforget.app.messages.md` / :func:`~clipforget.app.messages.text` and every message through the
services' path scrubber, so nothing a user typed renders as markup and no server path reaches the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipforget.core.errors import ClipforgetError
from clipforget.data.images import open_image
from clipforget.jobs.thread import STAGES

from ..messages import text
from ..runs import where
from ..uploads import UploadReport

STAGE_WEIGHTS = {"prepare": 0.05, "forget": 0.3, "remind": 0.3, "restore": 0.1, "evaluate": 0.1, "curves": 0.15}
STAGE_TITLES = {"prepare": "prepare data", "forget": "1 forget", "remind": "2 remind", "restore": "3 restore",
                "evaluate": "evaluate", "curves": "α curves + gallery"}
STATE_ICONS = {"queued": "⏳", "running": "⚙️", "done": "✅", "failed": "❌", "cancelled": "⏹", "interrupted": "⚠️"}
NO_RUN = "No run yet. Pick a preset or upload galleries, then start a run."
CSS = """
.cf-stage {display:flex; align-items:center; gap:.5em; margin:.15em 0}
.cf-stage span {width:11em; font-size:.9em}
.cf-stage progress {flex:1; height:.9em}
#cf-before .caption-label, #cf-after .caption-label {font-size:.7em; white-space:normal; max-width:96%}
"""
SKIPPED_COLUMNS = ["gallery", "file", "reason"]


def render_status(snap: dict[str, Any] | None, scrub: Callable[[str], str] = str) -> str:
    """HTML for a job snapshot: state, elapsed time, one bar per stage, message or error."""
    if not snap:
        return NO_RUN
    state = str(snap.get("state", "unknown"))
    lines = [f"<b>{STATE_ICONS.get(state, '')} {text(snap.get('title', ''))}</b> — {text(state)}, "
             f"{float(snap.get('elapsed') or 0):.0f} s elapsed <small>(model {text(scrub(str(snap.get('model'))))}, "
             f"profile {text(snap.get('profile'))}, {text(where(snap))})</small>"]
    stages = snap.get("stages") or {}
    for stage in STAGES:
        value = float(stages.get(stage, 0.0) or 0.0)
        lines.append(f"<div class='cf-stage'><span>{STAGE_TITLES[stage]}</span>"
                     f"<progress max='1' value='{value:.3f}'></progress><small>{100 * value:.0f}%</small></div>")
    if snap.get("error"):
        lines.append(f"<div style='color:#b00'><b>Error:</b> {text(scrub(snap['error']))}</div>")
    else:
        lines.append(f"<small>{text(scrub(snap.get('message') or ''))}</small>")
    return "\n".join(lines)


def overall(snap: dict[str, Any]) -> float:
    return sum(STAGE_WEIGHTS[s] * float((snap.get("stages") or {}).get(s, 0.0) or 0.0) for s in STAGES)


def run_choices(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for r in runs:
        when = time.strftime("%m-%d %H:%M", time.localtime(r["created"] or 0))
        extra = f" · Score {r['score']:.1f} · α*={r['alpha']:.2f}" if r.get("score") is not None else ""
        place = f" · {r['where']}" if r.get("where") else ""
        out.append((f"{when} · {r['title']} · {r['state']}{extra}{place}", r["id"]))
    return out


def hit_mark(hit: dict[str, Any]) -> str:
    """A retrieval hit's marks: ``⬅ LEFT`` (gone from θ(α)'s top-k), ``➡ NEW`` (entered it), ``⚠ NEW FORGOTTEN``
    (entered it but of the forgotten subgroup), ``● TRAINED ON`` (an image the run trained on: not an audit's)."""
    marks = []
    if hit.get("mark") == "entered" and hit.get("forgotten"):
        marks.append("⚠ NEW FORGOTTEN")
    elif hit.get("mark"):
        marks.append({"left": "⬅ LEFT", "entered": "➡ NEW"}.get(hit["mark"], ""))
    if hit.get("trained"):
        marks.append("● TRAINED ON")
    return " ".join(m for m in marks if m)


def gallery_items(thumbnail: Callable[[str], Path | str], hits: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(thumbnail path or URL, caption)`` per retrieval hit; captions carry the marks of :func:`hit_mark`."""
    items = []
    for h in hits:
        marks = hit_mark(h)
        mark = f"{marks} " if marks else ""
        try:
            path = str(thumbnail(h["path"]))
        except (ClipforgetError, OSError):
            continue
        items.append((path, f"{mark}{h['score']:.2f} {h['label']}"))
    return items


def upload_previews(report: UploadReport, kind: str, max_pixels: int, limit: int = 8, size: int = 96) -> list:
    """Up to ``limit`` re-encoded thumbnails (PIL images, never the uploaded bytes) of an upload's readable images."""
    out = []
    for path in sorted(p for p in report.folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if len(out) >= limit:
            break
        try:
            image = open_image(path, max_pixels)
        except ClipforgetError:
            continue
        image.thumbnail((size, size))
        out.append((image.convert("RGB"), f"{kind}: {path.name}"[:60]))
    return out
