"""The page's callbacks: each resolves the caller's workspace from its signed token, checks its inputs on the
server, calls the services and returns what the components show.

A callback never trusts the page: numbers are checked by :mod:`clipforget.app.validate`, models by the allow-list,
runs by their owner. Library errors become a readable message with server paths scrubbed; anything unexpected is
logged on the server and reported without a traceback.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import shutil
import time
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio import route_utils
from gradio.components.plot import PlotData

from clipforget.core.errors import ClipforgetError, DataError
from clipforget.pipeline.folder import STATES_ACTIVE
from clipforget.pipeline.report import score_text, stress_html

from .. import compare, reports, selection, stress, validate
from ..config import EXAMPLE_PROMPTS
from ..messages import md
from ..messages import text as html_text
from ..presets import PRESETS
from ..service import AppServices
from ..uploads import shared_files
from .render import (
    SKIPPED_COLUMNS,
    gallery_items,
    lag_badge,
    render_status,
    run_choices,
    stress_progress,
    upload_previews,
    verdict_html,
)

log = logging.getLogger("clipforget.app")


def _paths(files) -> list[str]:
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else getattr(f, "name", None) or getattr(f, "path", str(f)) for f in files]


class Handlers:
    """Callbacks bound to one :class:`AppServices` (see the module docstring)."""

    def __init__(self, services: AppServices):
        self.s = services

    # plumbing ------------------------------------------------------------------------------------------------------
    def owner(self, request: gr.Request | None) -> str:
        """The caller's workspace id, from its token (``X-Clipforget-Token`` header or the HttpOnly cookie)."""
        if request is None:
            raise DataError("no request: call this through the app")
        owner = self.s.tokens.owner(request.headers, request.cookies)
        self.s.workspaces.touch(owner)
        return owner

    @staticmethod
    def _run_id(rid: object, missing: str = "open a run first") -> str:
        rid = validate.short_text(rid, "the run id", 120)
        if not rid:
            raise DataError(missing)
        return rid

    def _gallery(self, gal: object) -> str:
        gal = validate.short_text(gal, "the gallery", 100)
        self.s.galleries.sources(gal)  # unknown names are refused before any work
        return gal

    def _open(self, owner: str, rid: object, gal: object):
        return self.s.runs.open(owner, self._run_id(rid)), self._gallery(gal)

    @staticmethod
    def _model(spec: object, prof: object) -> tuple[str, str]:
        return validate.short_text(spec, "the model", 300), validate.short_text(prof, "the profile", 20) or "fast"

    def _run_args(self, label_text: object, retain_text: object, spec: object, prof: object, also: object) -> tuple:
        """A new run's checked label, retain label, model, profile and forget prompts ('also forget as' names)."""
        also = validate.short_text(also, "the 'also forget as' names", 300)
        prompts = [f"a photo of a {name.strip()}." for name in also.split(",") if name.strip()]
        return (validate.short_text(label_text, "the label", 100),
                validate.short_text(retain_text, "the retain label", 100), *self._model(spec, prof), prompts)

    @staticmethod
    def _run_list(runs: list, value: str | None = None):
        """The run dropdown: ``runs``' choices, ``value`` else the newest run selected."""
        choices = run_choices(runs)
        return gr.update(choices=choices, value=value or (choices[0][1] if choices else None))

    @staticmethod
    def _link(path: Path, size: str, attrs: str, note: str) -> str:
        return (f'<a href="clipforget/download/{html_text(path.name)}" download class="cf-download"{attrs}>'
                f"⬇ {html_text(path.name)} ({size})</a> — {note}")

    def message(self, err: BaseException) -> str:
        """A user-facing error text: scrubbed of server paths, no markup."""
        return self.s.scrub(str(err).strip("'\"")).replace("<", "‹").replace(">", "›")

    def errors(self, fn):
        """Turn library errors into a message box; unexpected errors are logged here and shown without detail
        (generator callbacks too: their errors happen while they are iterated)."""

        def translate(err: Exception) -> gr.Error:
            if isinstance(err, gr.Error):
                return err
            if isinstance(err, ClipforgetError | FileNotFoundError | KeyError):
                return gr.Error(self.message(err), print_exception=False)
            log.exception("unexpected error in %s", fn.__name__)
            return gr.Error("the server could not do this (the error is logged on the server)", print_exception=False)

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapped_gen(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as err:
                    raise translate(err) from None

            return wrapped_gen

        @functools.wraps(fn)  # keeps the signature: Gradio injects gr.Request / gr.Progress by it
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                raise translate(err) from None

        return wrapped

    # set-up tab ----------------------------------------------------------------------------------------------------
    def init(self, request: gr.Request):
        owner = self.owner(request)
        runs = self.s.runs.list_runs(owner)
        return (self.s.runs.active_id(owner) or "", render_status(self.s.runs.status(owner), self.s.scrub),
                self._run_list(runs), gr.update(choices=self.s.runs.policy.choices(runs)))

    def check_model(self, spec: str, request: gr.Request):
        owner = self.owner(request)
        spec = validate.short_text(spec, "the model", 300)
        try:
            return self.s.runs.policy.describe(spec, owner)
        except ClipforgetError as err:
            return f"⚠ **{md(spec, 80)}** cannot be used here: {md(self.message(err), 400)}"

    @staticmethod
    def preset_changed(name: str):
        p = PRESETS.get(validate.short_text(name, "the preset", 100))
        if p is None:
            return gr.update()
        return gr.update(choices=p.choices(), value=p.default_choice(), label=p.choice_label,
                         interactive=p.has_choice())

    def _save_all(self, owner: str, upload_id: str, f, r, c) -> None:
        for kind, files in (("forget", f), ("retain", r), ("calibration", c)):
            self.s.runs.save_uploads(owner, kind, _paths(files), upload_id)

    def check_uploads(self, f, r, c, label_text, retain_text, request: gr.Request):
        owner = self.owner(request)
        label_text = validate.short_text(label_text, "the label", 100)
        retain_text = validate.short_text(retain_text, "the retain label", 100)
        self._save_all(owner, "preview", f, r, c)
        root = self.s.runs.upload_root(owner, "preview")
        rows, lines, previews = [], [], []
        for kind, lab in (("forget", label_text or "forget"), ("retain", retain_text or None), ("calibration", None)):
            rep = self.s.runs.inspect_upload(root / kind, lab)
            if rep.files or rep.skipped or rep.ignored:
                lines.append("- " + md(rep.summary(kind), 2000))
                previews += upload_previews(rep, kind, self.s.config.max_pixels)
            rows += [[kind, p, self.message(why)] for p, why in rep.skipped]
        text = "\n".join(filter(None, [*lines, self._shared(root)])) or "Nothing uploaded yet."
        return text, pd.DataFrame(rows, columns=SKIPPED_COLUMNS), previews

    @staticmethod
    def _shared(root) -> str:
        both = shared_files(root / "forget", root / "retain")
        if not both:
            return ""
        names = ", ".join(f"{a} = {b}" for a, b in both[:5]) + (" …" if len(both) > 5 else "")
        return (f"- ⚠ {len(both)} image(s) are in both the forget and the retain gallery (same bytes): "
                f"{md(names, 400)}. The run will be asked to forget and to keep the same picture.")

    def start_from_preset(self, name, opt, spec, prof, request: gr.Request):
        owner = self.owner(request)
        snap = self.s.runs.start_preset(owner, validate.short_text(name, "the preset", 100),
                                        validate.short_text(opt, "the option", 100) or None, *self._model(spec, prof))
        return snap["id"], render_status(snap, self.s.scrub)

    def start_from_uploads(self, f, r, c, label_text, retain_text, spec, prof, also: object = None,
                           request: gr.Request = None):
        owner = self.owner(request)
        label_text, retain_text, spec, prof, prompts = self._run_args(label_text, retain_text, spec, prof, also)
        self.s.runs.policy.resolve(spec, owner)  # refuse before copying anything
        upload_id = self.s.runs.new_upload_id()
        root = self.s.runs.upload_root(owner, upload_id)
        try:
            self._save_all(owner, upload_id, f, r, c)
            shared = shared_files(root / "forget", root / "retain")
            snap = self.s.runs.start_upload(owner, upload_id, label_text, retain_text, spec, prof, prompts)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)  # a refused run leaves no copy of its uploads
            raise
        if shared:
            gr.Warning(f"{len(shared)} image(s) are in both the forget and the retain gallery")
        return snap["id"], render_status(snap, self.s.scrub)

    def watch(self, current: str, request: gr.Request):
        """Follow the run until it ends (the app's stage bars: no Gradio overlay); other controls stay usable."""
        owner = self.owner(request)
        current = validate.short_text(current, "the run id", 120)
        if not current or self.s.runs.snapshot(owner, current) is None:
            yield render_status(self.s.runs.status(owner), self.s.scrub)
            return
        while True:
            snap = self.s.runs.snapshot(owner, current) or {}
            yield render_status(snap, self.s.scrub)
            if snap.get("state") not in STATES_ACTIVE:
                return
            time.sleep(0.5)

    def after_run(self, current: str, request: gr.Request):
        owner = self.owner(request)
        runs = self.s.runs.list_runs(owner)
        snap = self.s.runs.snapshot(owner, current) if current else None
        finished = snap is not None and snap.get("state") == "done"
        return self._run_list(runs, current if finished else None), gr.update(choices=self.s.runs.policy.choices(runs))

    def do_cancel(self, current: str, request: gr.Request):
        owner = self.owner(request)
        ok = self.s.runs.cancel(owner, current or None)
        gr.Info("cancelling the run…" if ok else "no run to cancel")
        return render_status(self.s.runs.status(owner), self.s.scrub)

    # explore tab ---------------------------------------------------------------------------------------------------
    def refresh_runs(self, request: gr.Request):
        return self._run_list(self.s.runs.list_runs(self.owner(request)))

    def delete_run(self, rid: str, request: gr.Request):
        owner = self.owner(request)
        rid = self._run_id(rid, "pick a run first")
        self.s.runs.delete(owner, rid)
        gr.Info("run deleted")
        return self._run_list(self.s.runs.list_runs(owner)), ""

    def _thumbnail_url(self, request: gr.Request | None):
        """``image path -> thumbnail URL``: the app's own thumbnail route, as an absolute URL so that Gradio hands it
        to the page as it is (a local path would be checked, hashed and copied into Gradio's cache on every event);
        the path itself where the request does not tell the app's public address."""
        thumbnail = self.s.galleries.thumbnail
        raw = getattr(request, "request", None)
        try:
            root = route_utils.get_root_url(raw, route_utils.get_api_call_path(raw),
                                            getattr(raw.app, "root_path", None) or None) if raw is not None else ""
        except (ValueError, AttributeError, KeyError):
            root = ""
        if not root:
            return thumbnail

        def url(path: str) -> str:  # the thumbnail is made once, kept in the thumbnail folder
            return f"{root}/clipforget/thumb/{thumbnail(path).name}"

        return url

    def _explore(self, view, a: float, prompt: str, gallery: str, request: gr.Request | None = None):
        fig = PlotData(type="plotly", plot=view.figure_json(a))
        headers, rows = view.metrics_table(a)
        table = pd.DataFrame(rows, columns=headers)
        prompt = validate.short_text(prompt, "the prompt")
        found = verdict_html(reports.verdict(view, a, gallery))
        if not prompt:
            return fig, table, found, "Type a prompt to compare retrieval.", [], []
        try:
            res = view.retrieve(prompt, a, gallery)
        except ClipforgetError as err:
            return fig, table, found, f"⚠ {md(self.message(err), 400)}", [], []
        grid = view.grid(gallery)
        msg = (f"**{md(prompt)}** in *{md(gallery)}*: top-{len(res['before'])} — {len(res['left'])} left, "
               f"{len(res['entered'])} entered. {lag_badge(a, res['grid_alpha'], len(grid.ready), len(grid.alphas))}")
        note = view.sample_note(gallery)
        if note:
            msg += f" <small>({md(note, 1000)})</small>"  # whole: it lists the ready α
        thumb = self._thumbnail_url(request)
        return (fig, table, found, msg, gallery_items(thumb, res["before"], after=False),
                gallery_items(thumb, res["after"], after=True))

    def open_run(self, rid: str, text: str, gal: str, opened: str | None, request: gr.Request, progress=gr.Progress()):
        """Open a run at its α*. A run other than the one ``opened`` starts on its own subgroup's name as the
        prompt when the box still holds a suggestion (the page's default, the last run's name): a lemon run does
        not open on "marmoset", and a prompt the person typed stays."""
        owner = self.owner(request)
        view = self.s.runs.open(owner, self._run_id(rid, "pick a run first"))
        if rid != opened and view.subject:
            suggested = {"", EXAMPLE_PROMPTS[1]}
            if opened:
                try:
                    suggested.add(self.s.runs.open(owner, self._run_id(opened)).subject)
                except ClipforgetError:  # the last run was deleted meanwhile: its name is no longer a suggestion
                    pass
            text = view.subject if text.strip() in suggested else text
        gal = self._gallery(gal)
        if not view.has_grid(gal):
            progress(0.0, desc=f"the gallery {gal} under this run's model (once per run)")
        view.grid(gal, lambda s, f, m: progress(f, desc=m))
        d = view.task
        summary = (f"**{md(view.title)}** · model `{md(self.s.scrub(view.model_label))}` · profile "
                   f"{md(view.spec.profile if view.spec else '?')} · forget {d.get('forget_images', '?')} / retain "
                   f"{d.get('retain_images', '?')} images · calibrated α* = {view.chosen_alpha:.2f} · "
                   f"Score at α*: {score_text(view.metrics.get('score', float('nan')))} · run {md(view.dir.name)}")
        skipped = [str(x[0]) if isinstance(x, list | tuple) and x else str(x) for x in d.get("skipped") or []]
        if skipped:
            names = ", ".join(Path(n).name for n in skipped[:8]) + (" …" if len(skipped) > 8 else "")
            summary += f" · {len(skipped)} input file(s) skipped: {md(self.s.scrub(names), 400)}"
        alphas = view.alphas(gal)
        step = round(min((b - a for a, b in itertools.pairwise(alphas)), default=0.05), 4)
        a = view.chosen_alpha
        return (rid, summary, gr.update(value=a, step=step), text, *self._explore(view, a, text, gal, request))

    def set_alpha(self, a: float, rid: str, text: str, gal: str, request: gr.Request):
        a = validate.alpha(a)
        view, gal = self._open(self.owner(request), rid, gal)
        if not view.has_grid(gal):
            raise DataError(f"gallery {gal} is not embedded for this run yet: press Open")
        return self._explore(view, a, text, gal, request)

    def gallery_changed(self, rid: str, text: str, gal: str, request: gr.Request, progress=gr.Progress()):
        if not rid:  # nothing opened yet: the choice applies when a run is opened
            return (gr.skip(),) * 10
        return self.open_run(rid, text, gal, rid, request, progress)

    def do_export(self, a: float, rid: str, request: gr.Request):
        owner = self.owner(request)
        a = validate.alpha(a)  # before the run id: a bad α gets its own message
        archive = self.s.export(owner, self._run_id(rid), a)
        return self._link(archive, f"{archive.stat().st_size / 1e6:.1f} MB", "",
                          "served to this workspace only; removed when the run is deleted or the server stops")

    def do_report(self, a: float, rid: str, text: str, gal: str, request: gr.Request):
        """Write the opened run's report (held-out audits at α) into the workspace's exports; a download link."""
        owner = self.owner(request)
        a = validate.alpha(a)
        started = time.perf_counter()
        report = self.s.report(owner, self._run_id(rid), a, validate.short_text(text, "the prompt"), self._gallery(gal))
        return self._link(report, f"{report.stat().st_size / 1e3:,.0f} KB, written in "
                          f"{time.perf_counter() - started:.1f} s", ' id="cf-report-link"',
                          "opens offline in any browser; served to this workspace only, as a download")

    # forget from the gallery -----------------------------------------------------------------------------------------
    def pick(self, target: str, picks: dict, rid: str, a: float, text: str, gal: str, evt: gr.SelectData,
             request: gr.Request, side: str = "before"):
        """A click on a retrieval thumbnail of the ``side`` panel adds that image (as a handle only this workspace
        can use) to the forget or the retain picks."""
        owner = self.owner(request)
        picks = self._picks(picks)
        if target not in ("forget", "retain"):
            return picks, self._picks_text(picks)
        view, gal = self._open(owner, rid, gal)
        hits = view.retrieve(validate.short_text(text, "the prompt"), validate.alpha(a), gal)[side]
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not isinstance(index, int) or not 0 <= index < len(hits):
            raise DataError("pick a thumbnail of the retrieval panel")
        if picks["gallery"] != gal:
            picks = {"gallery": gal, "forget": [], "retain": []}
        handle = self.s.tokens.image_handle(owner, gal, hits[index]["id"])
        if handle not in picks[target]:
            picks[target] = [*picks[target], handle][:500]
        return picks, self._picks_text(picks)

    def pick_after(self, target: str, picks: dict, rid: str, a: float, text: str, gal: str, evt: gr.SelectData,
                   request: gr.Request):
        return self.pick(target, picks, rid, a, text, gal, evt, request, "after")

    @staticmethod
    def _picks(picks: object) -> dict:
        picks = picks if isinstance(picks, dict) else {}
        return {"gallery": str(picks.get("gallery") or ""), "forget": list(picks.get("forget") or [])[:500],
                "retain": list(picks.get("retain") or [])[:500]}

    @staticmethod
    def _picks_text(picks: dict) -> str:
        if not picks["forget"] and not picks["retain"]:
            return "No images picked."
        return (f"Picked in *{md(picks['gallery'])}*: {len(picks['forget'])} for the forget set, "
                f"{len(picks['retain'])} for the retain set.")

    def clear(self):
        empty = self._picks(None)
        return empty, self._picks_text(empty)

    def start_from_selection(self, gal: str, fprompt: str, fk: float, rprompt: str, rk: float, label_text: str,
                             retain_text: str, also: str, picks: dict, rid: str, spec: str, prof: str,
                             request: gr.Request):
        """Start a run on the selection: prompts' top-k and picks of the gallery become its forget / retain sets."""
        owner = self.owner(request)
        gal = self._gallery(gal)
        picks = self._picks(picks)
        rows = {}
        for side in ("forget", "retain"):
            handles = picks[side] if picks["gallery"] == gal else []
            rows[side] = [self.s.tokens.image_row(owner, gal, h) for h in handles]
            if any(r is None for r in rows[side]):
                raise DataError("some picked images are not this workspace's picks: pick them again")
        asked = selection.SelectionRequest(
            gal, validate.short_text(fprompt, "the forget prompt"), selection.check_k(fk, "the forget top-k"),
            rows["forget"], validate.short_text(rprompt, "the retain prompt"),
            selection.check_k(rk, "the retain top-k"), rows["retain"])
        label_text, retain_text, spec, prof, prompts = self._run_args(label_text, retain_text, spec, prof, also)
        rid = validate.short_text(rid, "the run id", 120)
        # the ranking the panel showed: the opened run's original model
        index_model = self.s.runs.open(owner, rid).model_spec if rid else None
        snap = self.s.runs.start_selection(owner, asked, label_text, retain_text or None, spec, prof, prompts,
                                           index_model)
        msg = (f"Started **{md(snap.get('title', ''))}**: progress in tab 1; the run appears in the run list when "
               "it is done.")
        return snap["id"], render_status(snap, self.s.scrub), msg

    # compare -------------------------------------------------------------------------------------------------------
    def compare_choices(self, request: gr.Request):
        runs = [r for r in self.s.runs.list_runs(self.owner(request)) if r["state"] == "done"]
        choices = run_choices(runs)
        return gr.update(choices=choices, value=[c[1] for c in choices[:3]] if len(choices) >= 2 else [])

    def compare(self, rids: list, text: str, gal: str, request: gr.Request):
        owner = self.owner(request)
        rids = rids if isinstance(rids, list) else [rids]
        ids = [self._run_id(r, "pick runs to compare") for r in rids][:compare.MAX_RUNS + 1]
        views = [self.s.runs.open(owner, r) for r in ids]
        result = compare.compare_runs(views, validate.short_text(text, "the prompt"), self._gallery(gal))
        thumb = self._thumbnail_url(request)
        blocks = []
        for title, hits in result.top_k:
            cells = "".join(f"<figure style='display:inline-block;vertical-align:top;margin:2px;width:100px;"
                            "font-size:.7em'>"
                            f"<img src='{html_text(str(url))}' width='96' height='96' style='object-fit:contain'>"
                            f"<figcaption>{html_text(caption)}</figcaption></figure>"
                            for url, caption in gallery_items(thumb, hits, after=True))
            blocks.append(f"<div class='cf-compare-run'><b>{html_text(title)}</b><div>{cells}</div></div>")
        runs = len(result.headers) - 1  # the runs share the width left of the role column: no column cut off
        table = gr.Dataframe(value=pd.DataFrame(result.rows, columns=result.headers),
                             column_widths=["19%", *[f"{81 / runs:.1f}%"] * runs])
        return PlotData(type="plotly", plot=result.figure_json), table, "\n".join(blocks)

    # stress test ---------------------------------------------------------------------------------------------------
    def stress_show(self, rid: str, request: gr.Request):
        """The opened run's last stress test (its ``stress.json``), or what the test would do."""
        owner = self.owner(request)
        rid = validate.short_text(rid, "the run id", 120)
        if not rid:
            return "", stress_html({})
        return "", stress_html(self.s.stress.existing(owner, rid), self.s.runs.open(owner, rid).title)

    def stress_run(self, rid: str, gal: str, relearning: object, texts: object, request: gr.Request,
                   progress=gr.Progress()):
        """Run the stress test of the opened run in a thread and follow it: a moving bar, then the result."""
        owner = self.owner(request)
        rid = self._run_id(rid, "open a run in tab 2 first")
        gal = self._gallery(gal)
        prompts = stress.parse_texts(texts)
        job = self.s.stress.start(owner, rid, gal, relearning is True, prompts)
        title = self.s.runs.open(owner, rid).title
        while not job.done.wait(0.5):
            progress(job.fraction, desc=self.s.scrub(job.message))
            yield stress_progress(job.stage, job.fraction, job.message, job.elapsed, self.s.scrub), gr.skip()
        if job.error is not None:
            raise job.error  # a short message by self.errors
        yield "", stress_html(job.result or {}, title)

    def new_api_token(self) -> str:
        """A token for a new, empty workspace (for scripts: send it in the ``X-Clipforget-Token`` header)."""
        return self.s.tokens.issue(self.s.workspaces.new_id(), "api")
