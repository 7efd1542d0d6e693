"""What the page shows, as data Gradio can take: run status HTML, run choices, thumbnails, tables, previews.

No Gradio import: these are plain functions of snapshots and results, tested without a server. User-typed words go
through :func:`clipforget.app.messages.md` / :func:`~clipforget.app.messages.text` and every message through the
services' path scrubber, so nothing a user typed renders as markup and no server path reaches the page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipforget.core.errors import ClipforgetError
from clipforget.core.progress import duration
from clipforget.data.images import open_image
from clipforget.jobs.thread import STAGES
from clipforget.pipeline.report import SCORE_EXPLAINED, hit_caption, score_text

from ..messages import text
from ..reports import Verdict
from ..runs import where
from ..uploads import UploadReport

# what each stage does, in words a newcomer reads (the stage's technical message is the line's hover text)
STAGE_TITLES = {"prepare": "reading the photos", "forget": "1 · forgetting the subgroup",
                "remind": "2 · reminding it of the rest", "restore": "3 · choosing how much to keep (α)",
                "evaluate": "measuring accuracy", "curves": "accuracy at every α, gallery at α*"}
STEP_WORDS = {  # a stage message's leading words -> what it means
    "prefix": "reading the photos through the model's first layers (once per run)",
    "finding the names": "finding the names the model knows these photos by",
    "ranking layers": "choosing which layers to change",
    "LoRA on": "changing the chosen layers",
    "aligning": "matching the photos the model keeps",
    "no BatchNorm": "matching the photos the model keeps",
    "alpha": "trying blends of the original and the changed model",
    "zero-shot accuracy of the original": "measuring the original model",
    "zero-shot accuracy of the unlearned": "measuring the changed model",
    "evaluation curves": "accuracy at every α",
    "gallery": "the gallery under the changed model",
    "loading model": "loading the model",
    "reading images": "reading the photos",
}
PLAIN_ALREADY = ("preparing the",)  # messages written for the page already (clipforget.jobs.execute.GALLERY_STEP)
# state marks from fonts every browser has (Debian's Chromium has no emoji font: ✅ ⏳ render as empty boxes)
STATE_MARKS = {"queued": "◷", "running": "▶", "done": "✔", "failed": "✘", "cancelled": "■", "interrupted": "⚠"}
NO_RUN = "No run yet. Pick a preset or upload galleries, then start a run."
CSS = """
body:not(:has(#cf-status .cf-active)) #cf-cancel {display:none}
.cf-stage {display:flex; align-items:center; gap:.5em; margin:.15em 0}
.cf-stage span {width:19em; font-size:.9em}
.cf-stage progress {flex:1; height:.9em}
.cf-badge {display:inline-block; padding:.05em .5em; border-radius:.8em; font-size:.85em; background:#fef3c7;
  color:#92400e; border:1px solid #f59e0b}
.cf-badge.cf-ok {background:#dcfce7; color:#166534; border-color:#22c55e}
#cf-before .thumbnail-item, #cf-after .thumbnail-item {aspect-ratio:auto; height:auto; display:flex;
  flex-direction:column}
#cf-before .thumbnail-item > img, #cf-after .thumbnail-item > img {aspect-ratio:1; height:auto; flex:none}
#cf-before .caption-label, #cf-after .caption-label {position:static; max-width:100%; white-space:normal;
  overflow-wrap:anywhere; font-size:.7em; line-height:1.25; border:0; border-radius:0; padding:.15em .25em;
  opacity:1}
#cf-before .grid-wrap, #cf-after .grid-wrap {padding-top:0}
#cf-before .fixed-height, #cf-after .fixed-height {min-height:0; max-height:none}
#cf-verdict table {border-collapse:collapse; margin:.3em 0} #cf-verdict td, #cf-verdict th {padding:.1em .6em;
  border-bottom:1px solid #e5e7eb; text-align:left}
.cf-stress-table {border-collapse:collapse; margin:.4em 0; width:100%}
.cf-stress-table th, .cf-stress-table td {border:1px solid #ddd; padding:.25em .5em; text-align:left;
  vertical-align:top}
.cf-stress-table th {background:#f3f4f6}
.cf-verdict {font-weight:600}
.cf-v-good {color:#15803d} .cf-v-partly {color:#b45309} .cf-v-bad {color:#b91c1c} .cf-v-none {color:#6b7280}
"""
SKIPPED_COLUMNS = ["gallery", "file", "reason"]


def plain_step(message: str) -> str:
    """A stage message (``forget: step 7/30 loss 0.1234``) in words: what the step is and how far it is."""
    _, _, rest = message.partition(": ") if ": " in message else ("", "", message)
    if rest.startswith(PLAIN_ALREADY):
        return rest
    words = next((w for key, w in STEP_WORDS.items() if rest.startswith(key) or message.startswith(key)), "")
    count = re.search(r"([\d,]+)\s*/\s*([\d,]+)", rest)
    counted = f"{count.group(1)} of {count.group(2)}" if count else ""
    if "step" in rest and count:
        counted = f"step {counted}"
    return " — ".join(x for x in (words, counted) if x)


def _bar(title: str, value: float, hover: str = "") -> str:
    value = min(max(float(value), 0.0), 1.0)
    tip = f" title='{text(hover)}'" if hover else ""
    return (f"<div class='cf-stage'{tip}><span>{text(title)}</span><progress max='1' value='{value:.3f}'>"
            f"</progress><small>{100 * value:.0f}%</small></div>")


def render_status(snap: dict[str, Any] | None, scrub: Callable[[str], str] = str) -> str:
    """HTML for a job snapshot: state, time since the click (a queued wait included: it never restarts at 0), one
    bar per stage -- a waiting run's first bar is the worker's warm-up when it does one -- and what it is doing."""
    if not snap:
        return NO_RUN
    state = str(snap.get("state", "unknown"))
    active = state in ("queued", "running")
    created = float(snap.get("created") or 0)
    since = (time.time() - created) if active and created else float(snap.get("elapsed") or 0)
    took = f"{duration(since)} since it was started" if active else f"took {duration(since)}"
    message = scrub(str(snap.get("message") or ""))
    css = "cf-active" if active else ""
    lines = [f"<b class='{css}'>{STATE_MARKS.get(state, '')} {text(snap.get('title', ''))}</b> — {text(state)}, {took} "
             f"<small>(model {text(scrub(str(snap.get('model'))))}, profile {text(snap.get('profile'))}, "
             f"{text(where(snap))})</small>"]
    warm = snap.get("warm_up") if state == "queued" else None
    if isinstance(warm, dict):
        lines.append(_bar(str(warm.get("title", "preparing")), float(warm.get("fraction") or 0),
                          str(warm.get("message", ""))))
    stages = snap.get("stages") or {}
    for stage in STAGES:
        lines.append(_bar(STAGE_TITLES[stage], float(stages.get(stage, 0.0) or 0.0)))
    if snap.get("error"):
        lines.append(f"<div style='color:#b00'><b>Error:</b> {text(scrub(snap['error']))}</div>")
    elif state == "running":
        lines.append(f"<small title='{text(message)}'>{text(plain_step(message) or message)}</small>")
    else:
        lines.append(f"<small>{text(message)}</small>")
    return "\n".join(lines)


def run_choices(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for r in runs:
        when = time.strftime("%m-%d %H:%M", time.localtime(r["created"] or 0))
        extra = f" · Score {score_text(r['score'])} · α*={r['alpha']:.2f}" if r.get("score") is not None else ""
        # where a run trains or waits matters while it does; a finished run's line stays short enough to read
        place = f" · {r['where']}" if r.get("where") and r["state"] in ("queued", "running") else ""
        out.append((f"{when} · {r['title']} · {r['state']}{extra}{place}", r["id"]))
    return out


def gallery_items(thumbnail: Callable[[str], Path | str], hits: list[dict[str, Any]], after: bool
                  ) -> list[tuple[str, str]]:
    """``(thumbnail path or URL, caption)`` per retrieval hit; captions say marks, cosine and label
    (:func:`clipforget.pipeline.report.hit_caption`)."""
    items = []
    for h in hits:
        try:
            path = str(thumbnail(h["path"]))
        except (ClipforgetError, OSError):
            continue
        items.append((path, hit_caption(h.get("mark", ""), bool(h.get("forgotten")), after, h["score"], h["label"],
                                        bool(h.get("trained")))))
    return items


def lag_badge(alpha: float, shown: float, ready: int, total: int) -> str:
    """A short badge: the galleries show θ(α) at the slider's α, or at the nearest α ready while the run's other
    slider steps are still being computed."""
    if abs(alpha - shown) > 1e-6:
        return (f"<span class='cf-badge' id='cf-lag'>galleries at α = {shown:.2f}, not {alpha:.2f}: "
                f"{ready} of {total} α ready</span>")
    if ready < total:
        return f"<span class='cf-badge cf-ok'>galleries at α = {shown:.2f} ({ready} of {total} α ready)</span>"
    return f"<span class='cf-badge cf-ok'>galleries at α = {shown:.2f}</span>"


def verdict_html(v: Verdict) -> str:
    """The verdict above the galleries: the subgroup's photos found by its label and names (original -> θ(α)), what
    was kept, a warning where the evaluation sets are too small to trust, and the Score in one line."""
    def counts(rows: list[tuple[str, int, int]]) -> str:
        return ", ".join(f"“{text(n, 100)}” <b>{b} → {a}</b>" for n, b, a in rows)

    lines = [f"<b>At α = {v.alpha:.2f}</b>, photos of the forgotten subgroup among the top-{v.k} the gallery "
             "returns (held-out photos only; original → θ(α)):"]
    if v.label:
        lines.append(f"by its label: {counts(v.label)}")
    if v.forgotten_as:
        lines.append(f"also forgotten as: {counts(v.forgotten_as)}")
    still = [n for n in v.names if n[2] >= n[1] > 0]
    if still:
        lines.append(f"<span class='cf-v-partly'>⚠ still found as: {counts(still)}</span>")
    kept = [f"{text(name, 80)} keeps {100 * ratio:.0f} % of its accuracy" for name, ratio in v.kept_sets]
    kept += [f"“{text(p, 80)}” finds {n} of its {v.k} images again" for p, n in v.unrelated]
    if kept:
        lines.append("kept: " + "; ".join(kept))
    if v.small_sets:
        sets = ", ".join(f"{text(name, 80)} ({n} images)" for name, n in v.small_sets)
        lines.append(f"<span class='cf-v-bad'>⚠ too few evaluation images to trust: {sets}</span>")
    lines.append(f"<b>Score {text(v.score)}</b> <small>— {text(SCORE_EXPLAINED)}</small>")
    return "<div class='cf-verdict-box'>" + "<br>".join(lines) + "</div>"


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


# stress test -------------------------------------------------------------------------------------------------------
def stress_progress(stage: str, fraction: float, message: str, elapsed: float,
                    scrub: Callable[[str], str] = str) -> str:
    """A moving bar for a stress test at work."""
    return (f"<div class='cf-stress-progress'><b>▶ Stress test running</b> — {duration(elapsed)}"
            f"{_bar(stage, fraction)}<small>{text(scrub(message))}</small></div>")
