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
.cf-stress-table {border-collapse:collapse; margin:.4em 0; width:100%}
.cf-stress-table th, .cf-stress-table td {border:1px solid #ddd; padding:.25em .5em; text-align:left;
  vertical-align:top}
.cf-stress-table th {background:#f3f4f6}
.cf-verdict {font-weight:600}
.cf-v-good {color:#15803d} .cf-v-partly {color:#b45309} .cf-v-bad {color:#b91c1c} .cf-v-none {color:#6b7280}
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


# stress test -------------------------------------------------------------------------------------------------------
STRESS_NONE = ("No stress test of this run yet. It asks whether the subgroup is really gone: can other words still "
               "find it, does it come back after a little retraining, is it forgotten on photos the run never saw?")
STRESS_TESTS = {  # the library's test names -> the question a stakeholder asks
    "other names": "Can other words still find it?",
    "relearning": "Does it come back after a little retraining?",
    "unseen photos": "Is it forgotten on photos the run never saw?",
}


def _verdict_mark(verdict: str) -> tuple[str, str]:
    """``(symbol, CSS class)`` of a verdict: gone, partly, not gone, or not tested (symbols every font has)."""
    v = verdict.lower()
    if v.startswith(("forgotten", "resists", "subgroup forgotten")):
        return "✔", "cf-v-good"
    if v.startswith("partly"):
        return "⚠", "cf-v-partly"
    if v.startswith("not run") or v.startswith("untested"):
        return "–", "cf-v-none"
    if v.startswith("not"):
        return "✘", "cf-v-bad"
    return "–", "cf-v-none"


def stress_progress(stage: str, fraction: float, message: str, elapsed: float,
                    scrub: Callable[[str], str] = str) -> str:
    """A moving bar for a stress test at work."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    return (f"<div class='cf-stress-progress'><b>⚙️ Stress test running</b> — {elapsed:.0f} s"
            f"<div class='cf-stage'><span>{text(stage)}</span><progress max='1' value='{fraction:.3f}'></progress>"
            f"<small>{100 * fraction:.0f}%</small></div><small>{text(scrub(message))}</small></div>")


def stress_html(result: dict[str, Any], title: str = "") -> str:
    """The stress test of a run for the page: the verdict table in plain words, the ten texts that find most of
    the subgroup after (before → after) and the relearning table. Every text is escaped (user texts among them)."""
    if not result:
        return f"<p class='cf-stress-none'>{text(STRESS_NONE)}</p>"
    k = int(result.get("k", 20))
    gallery = f"<i>{text(result.get('gallery', ''), 100)}</i>"
    where = f"in gallery {gallery}" if result.get("subgroup_source") == "gallery" else \
        f"the run's own, added to gallery {gallery}"
    head = (f"<p>{'<b>' + text(title, 200) + '</b>: ' if title else ''}stress test at α = "
            f"{float(result.get('alpha', 0)):.2f} over {int(result.get('subgroup_images', 0))} held-out photos of "
            f"the subgroup ({where}; took {float(result.get('seconds', 0)):.0f} s). A text “finds” a photo when the "
            f"photo is among its top-{k}.</p>")
    rows = []
    verdicts = list(result.get("verdicts") or [])
    if not any(str(v.get("test", "")).startswith("relearning") for v in verdicts):
        verdicts.insert(1, {"test": "relearning", "verdict": "not run",
                            "numbers": "tick “include relearning” and run the stress test again (a few minutes)"})
    for v in verdicts:
        test = str(v.get("test", ""))
        question = next((q for key, q in STRESS_TESTS.items() if test.startswith(key)), "")
        verdict = str(v.get("verdict", ""))
        if "nan" in str(v.get("numbers", "")).split():
            # a share of nothing: the original model did not recognise these photos either, so no verdict holds
            verdict = "untested: the original model did not recognise these photos either"
        mark, css = _verdict_mark(verdict)
        rows.append(f"<tr><td><b>{text(test)}</b><br><small>{text(question)}</small></td>"
                    f"<td class='cf-verdict {css}'>{mark} {text(verdict)}</td>"
                    f"<td>{text(v.get('numbers', ''), 600)}</td></tr>")
    parts = [head, "<table class='cf-stress-table' id='cf-stress-verdicts'><thead><tr><th>test</th><th>verdict</th>"
                   f"<th>numbers</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"]
    names = result.get("names") or {}
    texts = list(names.get("texts") or [])[:10]
    if texts:
        parts.append(f"<h4>Other names: the ten texts that find most of the subgroup now</h4><p><small>"
                     f"{len(names.get('texts') or [])} texts tried ({text(', '.join(names.get('families') or []))});"
                     f" photos of the subgroup in the top-{k}, original model → θ(α).</small></p>"
                     "<table class='cf-stress-table' id='cf-stress-names'><thead><tr><th>text</th><th>kind</th>"
                     "<th>before → after</th></tr></thead><tbody>")
        parts += [f"<tr><td>{text(r.get('text', ''), 300)}</td><td>{text(r.get('family', ''))}</td>"
                  f"<td>{int(r.get('before', 0))} → <b>{int(r.get('after', 0))}</b></td></tr>" for r in texts]
        parts.append("</tbody></table>")
    relearning = result.get("relearning") or {}
    if relearning.get("rows"):
        probe = (relearning.get("texts") or [""])[0]
        parts.append("<h4>Relearning: plain fine-tuning from θ(α) and, for comparison, from the original</h4>"
                     f"<p><small>The subgroup's zero-shot accuracy (its share of the original model's), the same by "
                     f"the subgroup's own names, and how many of its photos “{text(probe, 200)}” finds in the "
                     f"top-{k}.</small></p><table class='cf-stress-table' id='cf-stress-relearning'><thead><tr>"
                     "<th>attack</th><th>from</th><th>steps</th><th>zero-shot</th><th>own names</th><th>top-k</th>"
                     "</tr></thead><tbody>")
        parts += [f"<tr><td>{text(r.get('attack', ''))}</td><td>{text(r.get('model', ''))}</td>"
                  f"<td>{int(r.get('steps', 0))}</td><td>{_share(r, 'zero_shot')}</td>"
                  f"<td>{_share(r, 'name_zero_shot')}</td><td>{int(r.get('top_k', 0))}</td></tr>"
                  for r in relearning["rows"]]
        parts.append("</tbody></table>")
    parts.append(f"<p><small>Weight distance of θ(α) to the original (relative L2): "
                 f"{float(result.get('weight_distance', 0)):.4f}.</small></p>")
    return "".join(parts)


def _share(row: dict[str, Any], key: str) -> str:
    value, ratio = row.get(key), row.get(f"{key}_ratio")
    if value is None:
        return ""
    ratio_text = f" ({float(ratio):.2f})" if ratio is not None and ratio == ratio else ""
    return f"{float(value):.2f}{ratio_text}"
