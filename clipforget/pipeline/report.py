"""A run's audit report: one self-contained HTML file that opens offline in any browser and can be e-mailed.

It holds the task, the model and the data (with hashes), alpha*, the metrics table with the Score, the accuracy-vs-
alpha curves (plotly, its JavaScript inlined), the top-k before / after of the audit prompts as downscaled JPEG
thumbnails (data URIs) with their marks, the texts forgotten, timings and the command that reproduces the run.

Audits count only held-out images: whoever builds a :class:`PromptResult` leaves out the images the run trained on
(:func:`held_out_audit` does, from a boolean mask), and the report says how many were left out. Nothing in the file
names a server path: images are embedded, models and data are named as the user named them and by their hashes.
"""

from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipforget.core.atomic import write_text
from clipforget.core.escape import html_text, script_json
from clipforget.core.paths import file_digest
from clipforget.core.progress import duration
from clipforget.retrieval.search import top_k_rows

from .curves import accuracy_figure
from .folder import RunFolder
from .stress import read_stress

THUMBNAIL_PX = 96
JPEG_QUALITY = 70
# one wording for the app's galleries and the report, in characters every font has (no emoji)
MARKS = {"left": "← left", "entered": "→ new", "found": "⚠ still found", "trained": "● trained on"}
MARKS_LEGEND = {"left": "gone from θ(α)'s top-k", "entered": "entered θ(α)'s top-k",
                "found": "an image of the forgotten subgroup θ(α) still finds", "trained": "the run trained on it"}

SCORE_EXPLAINED = ("Score = the mean of (1 − the forgotten set's ratio) and every kept set's ratio, ratio = "
                   "min(accuracy / the original model's, 1), in percent: 100 = the subgroup is gone and nothing "
                   "else was lost.")


def score_text(score: float) -> str:
    """The Score as every view writes it (run list, metrics table, report, model card): one decimal."""
    return f"{float(score):.1f}"


def hit_mark(mark: str, forgotten: bool, after: bool, trained: bool = False) -> str:
    """A top-k hit's marks (:data:`MARKS`): ``found`` for every image of the forgotten subgroup in θ(α)'s top-k --
    a failure whether it entered or stayed -- else ``left`` / ``entered``; ``trained`` besides."""
    marks = [MARKS["found"] if after and forgotten else MARKS.get(mark, "")]
    if trained:
        marks.append(MARKS["trained"])
    return " ".join(m for m in marks if m)


def hit_caption(mark: str, forgotten: bool, after: bool, score: float, label: str, trained: bool = False) -> str:
    """``marks · cos 0.31 · label``: what a thumbnail says under it."""
    return " · ".join(x for x in (hit_mark(mark, forgotten, after, trained), f"cos {score:.2f}", label) if x)


@dataclass
class ReportHit:
    """One image of a top-k: where to read it (server side, never written out), its label, score and marks."""

    image_path: str
    label: str
    score: float
    mark: str = ""  # "left" (before: gone from theta(alpha)'s top-k) / "entered" (after: new in it) / ""
    forgotten: bool = False  # of the forgotten subgroup


@dataclass
class PromptResult:
    """One audit prompt: top-k before (original model) and after (theta(alpha)) over the held-out images."""

    prompt: str
    before: list[ReportHit]
    after: list[ReportHit]
    excluded_trained: int = 0  # gallery images left out because the run trained on them
    gallery: str = ""
    gallery_images: int = 0

    @property
    def forgotten_counts(self) -> tuple[int, int]:
        return sum(h.forgotten for h in self.before), sum(h.forgotten for h in self.after)

    def fall(self) -> float | None:
        """Share of the forgotten subgroup's images in the top-k that are gone after unlearning (``None``: none
        were there)."""
        b, a = self.forgotten_counts
        return None if b == 0 else 1.0 - a / b


def held_out_audit(prompt: str, query: np.ndarray, before: np.ndarray, after: np.ndarray, k: int,
                   labels: list[str], paths: list[str], trained: np.ndarray, forgotten: np.ndarray,
                   gallery: str = "") -> PromptResult:
    """The top-``k`` of ``query`` among the images the run did not train on (``trained`` False), with the original
    embeddings ``before`` and theta(alpha)'s ``after`` (``N,D``, unit norm); marks what left and entered."""
    sims_before = np.asarray(before, dtype=np.float32) @ query
    sims_after = np.asarray(after, dtype=np.float32) @ query
    top_before = [int(i) for i in top_k_rows(sims_before, k, trained)]
    top_after = [int(i) for i in top_k_rows(sims_after, k, trained)]
    left, entered = set(top_before) - set(top_after), set(top_after) - set(top_before)

    def hits(rows: list[int], sims: np.ndarray, moved: set[int], mark: str) -> list[ReportHit]:
        return [ReportHit(paths[i], labels[i], float(sims[i]), mark if i in moved else "", bool(forgotten[i]))
                for i in rows]

    return PromptResult(prompt, hits(top_before, sims_before, left, "left"), hits(top_after, sims_after, entered,
                        "entered"), int(trained.sum()), gallery, len(paths))


def run_gallery_masks(folder: RunFolder, paths: list[str], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(trained, forgotten)`` booleans over a gallery's rows: the images the run trained on (a run made from a
    selection of this gallery, ``trained_on.json``), and the images of the forgotten subgroup -- the selection's
    forget images, and every image whose gallery label holds a name of the subgroup (``marmoset``,
    :meth:`RunFolder.subgroup_names`)."""
    record = folder.trained_on()
    real = [os.path.realpath(p) for p in paths] if record else []
    trained_paths = {os.path.realpath(p) for p in record.get("trained", [])}
    forget_paths = {os.path.realpath(p) for p in record.get("forget", [])}
    trained = np.fromiter((p in trained_paths for p in real), dtype=bool, count=len(real)) if record \
        else np.zeros(len(paths), dtype=bool)
    names = [n.lower() for n in folder.subgroup_names() if n]
    forgotten = np.fromiter((any(n in label.lower() for n in names) for label in labels), dtype=bool, count=len(labels))
    if forget_paths:
        forgotten |= np.fromiter((p in forget_paths for p in real), dtype=bool, count=len(real))
    return trained, forgotten


@dataclass
class ReportInputs:
    """What a report shows besides the run folder's own files."""

    alpha: float
    prompts: list[PromptResult] = field(default_factory=list)
    title: str = ""
    model_label: str = ""  # the base model as the user named it
    profile: str = ""
    described: dict[str, Any] = field(default_factory=dict)  # forget / retain / calibration, in words
    command: str = ""  # the command that reproduces the run
    metrics_table: tuple[list[str], list[list[Any]]] | None = None  # default: metrics.json (at alpha*)
    retrieval_note: str = ""  # why the report holds no retrieval audit, and how to add one (shown without prompts)


def model_hash(folder: RunFolder) -> str:
    """sha256 of theta(alpha*)'s weights file (``model/*.safetensors``)."""
    files = sorted((folder.path / "model").glob("*.safetensors"))
    return file_digest(files[0]) if files else ""


def data_hash(folder: RunFolder) -> str:
    """The data's hash: a selection's (sha256 over its images' bytes, recorded when it was made), else sha256 of
    what the run recorded about its task (``task.json``: counts, classes)."""
    recorded = folder.trained_on().get("data_sha256")
    if recorded:
        return str(recorded)
    task = folder.path / "task.json"
    return file_digest(task) if task.is_file() else ""


def saved_metrics_table(folder: RunFolder) -> tuple[list[str], list[list[Any]]]:
    """The run's metrics at alpha* (``metrics.json``) with the Score row."""
    metrics = folder.metrics()
    headers = ["set", "role", "images", "original %", f"θ(α*={folder.chosen_alpha:.2f}) %", "ratio"]
    rows: list[list[Any]] = [[name, v.get("role", ""), v.get("images", ""), round(100 * v["acc_original"], 1),
                              round(100 * v["acc"], 1), round(v["ratio"], 3)]
                             for name, v in metrics.get("zero_shot", {}).items()]
    rows.append(["Score", "", "", "", "", score_text(metrics.get("score", float("nan")))])
    return headers, rows


def thumbnail_data_uri(path: str, size: int = THUMBNAIL_PX, quality: int = JPEG_QUALITY) -> str:
    """A downscaled JPEG of the image as a ``data:`` URI (re-encoded from decoded pixels)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_report(folder: RunFolder, inputs: ReportInputs) -> str:
    """The report as one HTML document (see the module docstring)."""
    import plotly.offline

    e = html_text  # every word that reaches the file, typed or not, goes through it (docs/security.md)
    metrics = folder.metrics()
    config = folder.config()
    headers, rows = inputs.metrics_table or saved_metrics_table(folder)
    figure = accuracy_figure(folder)
    for trace in figure.get("data", []):  # plotly reads a trace name as its own small HTML
        if isinstance(trace, dict) and "name" in trace:
            trace["name"] = e(trace["name"])
    layout = figure.setdefault("layout", {})
    layout.setdefault("shapes", []).append({"type": "line", "x0": inputs.alpha, "x1": inputs.alpha, "xref": "x",
                                            "y0": 0, "y1": 1, "yref": "y domain", "line": {"color": "crimson"}})
    sizes = config.get("sizes", {})
    seconds = metrics.get("stage_seconds", {})
    forgotten = folder.forgotten_names()
    table = "".join(["<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>"]
                    + ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows])
    facts = [
        ("Task", f"{e(inputs.title or folder.name)} (task <code>{e(str(config.get('task', '')))}</code>)"),
        ("Forgotten", e(str(inputs.described.get("forget", config.get("task", ""))))),
        ("Kept", e(str(inputs.described.get("retain", "")))),
        ("Base model", f"<code>{e(inputs.model_label or Path(folder.model_spec).name)}</code>"),
        ("θ(α*) weights sha256", f"<code>{e(model_hash(folder))}</code>"),
        ("Data", e(f"{sizes.get('forget', '?')} forget / {sizes.get('retain', '?')} retain training images; "
                   f"calibration and evaluation (held out, never trained on) {sizes.get('calibration_forget', '?')} "
                   f"forget / {sizes.get('calibration_retain', '?')} retain")),
        ("Data sha256", f"<code>{e(data_hash(folder))}</code>"),
        ("Zero-shot classes", e(", ".join(config.get("classnames", [])))),
        ("Calibrated α*", f"{folder.chosen_alpha:.2f}"),
        ("Warnings at α*", "<br>".join(f"⚠ {e(w)}" for w in metrics.get("warnings", [])) or "none"),
        ("Audit α", f"{inputs.alpha:.2f}"),
        ("Run profile", e(inputs.profile or "?")),
        ("Also forgotten as", e(", ".join(forgotten)) or "—"),
        ("Timings", e(", ".join(f"{k} {duration(v)}" for k, v in seconds.items())
                      + f"; method {duration(metrics.get('method_seconds', 0))}, evaluation "
                      f"{duration(metrics.get('evaluation_seconds', 0))}, total "
                      f"{duration(metrics.get('total_seconds', 0))} (training and evaluation: the app's time also "
                      "counts the wait in the queue, the accuracy curves and the gallery)")),
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>clipforget report: {e(inputs.title or folder.name)}</title>",
        f"<style>{STYLE}</style>",
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<h1>clipforget audit report</h1><p class='sub'>{e(inputs.title or folder.name)} · run "
        f"<code>{e(folder.name)}</code> · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
        "<table class='facts'>" + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in facts) + "</table>",
        "<h2>Zero-shot accuracy</h2><table class='metrics'>" + table + "</table>",
        f"<p class='note'>{e(SCORE_EXPLAINED)}</p>",
        "<h2>Accuracy vs α</h2><div id='curves' class='plot'></div>",
        f"<script>const curves = {script_json(figure, default=_jsonable)};\n"
        "Plotly.newPlot('curves', curves.data, curves.layout, {displaylogo: false});</script>",
    ]
    if inputs.prompts:
        parts.append(f"<h2>Retrieval audits (α = {inputs.alpha:.2f})</h2>")
    elif inputs.retrieval_note:
        parts.append(f"<h2>Retrieval audits</h2><p class='note cf-left-out'>{e(inputs.retrieval_note)}</p>")
    for result in inputs.prompts:
        parts.append(_prompt_section(result))
    stress = read_stress(folder)
    if stress:
        parts.append("<h2>Stress test</h2>" + stress_html(stress))
    if inputs.command:
        parts.append(f"<h2>Reproduce</h2><pre>{e(inputs.command)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
    if v.startswith("not") and not v.startswith("not run"):
        return "✘", "cf-v-bad"
    return "–", "cf-v-none"  # not run, untested


def stress_html(result: dict[str, Any], title: str = "") -> str:
    """A run's stress test (``clipforget stress``) for the app's page and the report alike: the verdict table in
    plain words, the ten texts that find most of the subgroup after (before → after) and the relearning table.
    Every text is escaped (user texts among them)."""
    def e(value: object, limit: int = 500) -> str:
        return html_text(value, limit)

    if not result:
        return f"<p class='cf-stress-none'>{e(STRESS_NONE)}</p>"
    k = int(result.get("k", 20))
    gallery = f"<i>{e(result.get('gallery', ''), 100)}</i>"
    where = f"in gallery {gallery}" if result.get("subgroup_source") == "gallery" else \
        f"the run's own, added to gallery {gallery}"
    head = (f"<p>{'<b>' + e(title, 200) + '</b>: ' if title else ''}stress test at α = "
            f"{float(result.get('alpha', 0)):.2f} over {int(result.get('subgroup_images', 0))} held-out photos of "
            f"the subgroup ({where}; took {float(result.get('seconds', 0)):.0f} s). A text “finds” a photo when the "
            f"photo is among its top-{k}.</p>")
    rows = []
    verdicts = list(result.get("verdicts") or [])
    if not any(str(v.get("test", "")).startswith("relearning") for v in verdicts):
        verdicts.insert(1, {"test": "relearning", "verdict": "not run",
                            "numbers": "run the stress test again with relearning (a few minutes): the app's “include "
                                       "relearning”, `clipforget stress` without `--no-relearn`"})
    for v in verdicts:
        test = str(v.get("test", ""))
        question = next((q for key, q in STRESS_TESTS.items() if test.startswith(key)), "")
        verdict = str(v.get("verdict", ""))
        if "nan" in str(v.get("numbers", "")).split():
            # a share of nothing: the original model did not recognise these photos either, so no verdict holds
            verdict = "untested: the original model did not recognise these photos either"
        mark, css = _verdict_mark(verdict)
        rows.append(f"<tr><td><b>{e(test)}</b><br><small>{e(question)}</small></td>"
                    f"<td class='cf-verdict {css}'>{mark} {e(verdict)}</td>"
                    f"<td>{e(v.get('numbers', ''), 600)}</td></tr>")
    parts = [head, "<table class='cf-stress-table' id='cf-stress-verdicts'><thead><tr><th>test</th><th>verdict</th>"
                   f"<th>numbers</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"]
    names = result.get("names") or {}
    texts = list(names.get("texts") or [])[:10]
    if texts:
        parts.append(f"<h4>Other names: the ten texts that find most of the subgroup now</h4><p><small>"
                     f"{len(names.get('texts') or [])} texts tried ({e(', '.join(names.get('families') or []))});"
                     f" photos of the subgroup in the top-{k}, original model → θ(α).</small></p>"
                     "<table class='cf-stress-table' id='cf-stress-names'><thead><tr><th>text</th><th>kind</th>"
                     "<th>before → after</th></tr></thead><tbody>")
        parts += [f"<tr><td>{e(r.get('text', ''), 300)}</td><td>{e(r.get('family', ''))}</td>"
                  f"<td>{int(r.get('before', 0))} → <b>{int(r.get('after', 0))}</b></td></tr>" for r in texts]
        parts.append("</tbody></table>")
    relearning = result.get("relearning") or {}
    if relearning.get("rows"):
        probe = (relearning.get("texts") or [""])[0]
        parts.append("<h4>Relearning: plain fine-tuning from θ(α) and, for comparison, from the original</h4>"
                     f"<p><small>The subgroup's zero-shot accuracy (its share of the original model's), the same by "
                     f"the subgroup's own names, and how many of its photos “{e(probe, 200)}” finds in the "
                     f"top-{k} (Adam, lr {e(relearning.get('lr', ''))}).</small></p><table class='cf-stress-table' "
                     "id='cf-stress-relearning'><thead><tr><th>attack</th><th>from</th><th>steps</th><th>zero-shot"
                     "</th><th>own names</th><th>top-k</th></tr></thead><tbody>")
        parts += [f"<tr><td>{e(r.get('attack', ''))}</td><td>{e(r.get('model', ''))}</td>"
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


def _prompt_section(result: PromptResult) -> str:
    e = html_text
    b, a = result.forgotten_counts
    fall = result.fall()
    k = len(result.before)
    verdict = (f"images of the forgotten subgroup in the top-{k}: <b>{b} → {a}</b>"
               + (f" (fall <b>{100 * fall:.0f} %</b>)" if fall is not None else ""))
    excluded = (f"; {result.excluded_trained:,} images the run trained on were left out of both top-ks"
                if result.excluded_trained else "")
    where = f" in <i>{e(result.gallery)}</i> ({result.gallery_images:,} images{excluded})" if result.gallery else ""

    def strip(hits: list[ReportHit], after: bool) -> str:
        def css(h: ReportHit) -> str:
            return " ".join(c for c in (h.mark, "forgotten" if after and h.forgotten else "") if c)

        cells = "".join(f"<figure class='{css(h)}'><img alt='{e(h.label)}' src='{thumbnail_data_uri(h.image_path)}'>"
                        f"<figcaption title='{e(h.label)}'>"
                        f"{e(hit_caption(h.mark, h.forgotten, after, h.score, h.label))}</figcaption></figure>"
                        for h in hits)
        return f"<div class='side'><h4>{e(gallery_title(after))}</h4><div class='strip'>{cells}</div></div>"

    return (f"<section class='prompt'><h3>“{e(result.prompt)}”</h3><p>{verdict}{where}; held-out images only.</p>"
            f"<div class='pair'>{strip(result.before, False)}{strip(result.after, True)}</div></section>")


def gallery_title(after: bool, alpha: float | None = None) -> str:
    """The title of a before / after top-k, with the marks it may carry explained."""
    if not after:
        return f"Original model, top-k by cosine similarity ({MARKS['left']}: {MARKS_LEGEND['left']})"
    at = f"θ(α={alpha:.2f})" if alpha is not None else "θ(α)"
    return (f"{at}, top-k by cosine similarity ({MARKS['entered']}: {MARKS_LEGEND['entered']}; {MARKS['found']}: "
            f"{MARKS_LEGEND['found']})")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_report(folder: RunFolder, inputs: ReportInputs, out: Path) -> Path:
    """Render the report and write it atomically to ``out``."""
    out = Path(out)
    write_text(out, render_report(folder, inputs))
    return out


STYLE = """
body {font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222}
h1 {margin-bottom: .2em} .sub, .note {color: #666; font-size: .9em}
table {border-collapse: collapse; margin: .5em 0} th, td {border: 1px solid #ddd; padding: .25em .6em; text-align: left}
table.facts th {background: #f5f5f5; width: 14em} table.metrics tr:last-child {font-weight: bold}
.plot {width: 100%; height: 380px}
.pair {display: flex; gap: 1em} .side {flex: 1} .strip {display: flex; flex-wrap: wrap; gap: 4px}
figure {margin: 0; width: 104px; font-size: .7em; text-align: center; border: 2px solid transparent}
figure img {width: 96px; height: 96px; object-fit: contain; background: #eee}
figure.left {border-color: #c33} figure.entered {border-color: #393} figure.forgotten {border-color: #e90}
pre {background: #f5f5f5; padding: .8em; white-space: pre-wrap}
.cf-stress-table {width: 100%} .cf-stress-table th {background: #f3f4f6} .cf-stress-table td {vertical-align: top}
.cf-verdict {font-weight: 600}
.cf-v-good {color: #15803d} .cf-v-partly {color: #b45309} .cf-v-bad {color: #b91c1c} .cf-v-none {color: #6b7280}
"""
