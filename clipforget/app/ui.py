"""The Gradio Blocks app: set up a task, run the three stages in the background, explore alpha, export.

Layout and callbacks only; all work is done by the parts of :class:`clipforget.app.service.AppServices`. Every
callback resolves the caller's workspace (a random id kept in the browser's localStorage, so it survives reloads
and server restarts; API clients without one get a workspace per client session) and passes it on; the parts never
mix workspaces.
"""

from __future__ import annotations

import functools
import html
import re
import secrets
import time
from typing import Any

import gradio as gr
import pandas as pd
from gradio.components.plot import PlotData

from clipforget.core.errors import ClipforgetError, DataError
from clipforget.jobs.profiles import PROFILES
from clipforget.jobs.queue import STAGES
from clipforget.pipeline.folder import STATES_ACTIVE
from clipforget.settings import get_setting

from .config import EXAMPLE_PROMPTS
from .presets import PRESETS
from .service import AppServices

STAGE_WEIGHTS = {"prepare": 0.05, "forget": 0.3, "remind": 0.3, "restore": 0.1, "evaluate": 0.1, "curves": 0.15}
STAGE_TITLES = {"prepare": "prepare data", "forget": "1 forget", "remind": "2 remind", "restore": "3 restore",
                "evaluate": "evaluate", "curves": "α curves + gallery"}
CSS = """
.cf-stage {display:flex; align-items:center; gap:.5em; margin:.15em 0}
.cf-stage span {width:11em; font-size:.9em}
.cf-stage progress {flex:1; height:.9em}
#cf-before .caption-label, #cf-after .caption-label {font-size:.7em; white-space:normal; max-width:96%}
"""


def _owner(ws: str | None, request: gr.Request | None) -> str:
    """The caller's workspace id: the browser's stored one, else one derived from the client session."""
    if ws:
        return ws
    session = re.sub(r"[^A-Za-z0-9]", "", getattr(request, "session_hash", "") or "")
    if len(session) < 8:
        raise gr.Error("no session: reload the page")
    return "s" + session[:48]


def _errors(fn):
    """Turn library errors into a readable message box instead of a traceback."""

    @functools.wraps(fn)  # keeps the signature: Gradio injects gr.Request / gr.Progress by it
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ClipforgetError, FileNotFoundError, KeyError) as err:
            raise gr.Error(str(err).strip("'\""), print_exception=False) from None

    return wrapped


def render_status(snap: dict[str, Any] | None) -> str:
    """HTML for a job snapshot: state, elapsed time, one bar per stage, message or error."""
    if not snap:
        return "No run yet. Pick a preset or upload galleries, then start a run."
    state = str(snap.get("state", "unknown"))
    icon = {"queued": "⏳", "running": "⚙️", "done": "✅", "failed": "❌", "cancelled": "⏹",
            "interrupted": "⚠️"}.get(state, "")
    lines = [f"<b>{icon} {html.escape(str(snap.get('title', '')))}</b> — {state}, "
             f"{float(snap.get('elapsed') or 0):.0f} s elapsed <small>(model {html.escape(str(snap.get('model')))}, "
             f"profile {html.escape(str(snap.get('profile')))}, {html.escape(str(snap.get('backend', '')))} "
             f"{html.escape(str(snap.get('device', '')))})</small>"]
    for stage in STAGES:
        value = snap.get("stages", {}).get(stage, 0.0)
        lines.append(f"<div class='cf-stage'><span>{STAGE_TITLES[stage]}</span>"
                     f"<progress max='1' value='{value:.3f}'></progress><small>{100 * value:.0f}%</small></div>")
    if snap.get("error"):
        lines.append(f"<div style='color:#b00'><b>Error:</b> {html.escape(snap['error'])}</div>")
    else:
        lines.append(f"<small>{html.escape(snap.get('message', ''))}</small>")
    return "\n".join(lines)


def overall(snap: dict[str, Any]) -> float:
    return sum(STAGE_WEIGHTS[s] * snap.get("stages", {}).get(s, 0.0) for s in STAGES)


def _run_choices(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for r in runs:
        when = time.strftime("%m-%d %H:%M", time.localtime(r["created"] or 0))
        extra = f" · Score {r['score']:.1f} · α*={r['alpha']:.2f}" if r.get("score") is not None else ""
        out.append((f"{when} · {r['title']} · {r['state']}{extra}", r["id"]))
    return out


def _gallery_items(service: AppServices, hits: list[dict[str, Any]], after: bool) -> list[tuple[str, str]]:
    items = []
    for h in hits:
        mark = ""
        if h["mark"] == "left":
            mark = "⬅ LEFT "
        elif h["mark"] == "entered":
            mark = "➡ NEW "
        try:
            path = str(service.galleries.thumbnail(h["path"]))
        except (ClipforgetError, OSError):
            continue
        items.append((path, f"{mark}{h['score']:.2f} {h['label']}"))
    return items


def build_ui(service: AppServices, default_profile: str = "fast") -> gr.Blocks:
    """The app's Blocks (launch it with :func:`launch_kwargs`)."""
    cfg = service.config
    secret_file = service.cache / "app_secret.txt"
    if not secret_file.is_file():
        secret_file.write_text(secrets.token_urlsafe(24), encoding="utf-8")
    secret = secret_file.read_text(encoding="utf-8").strip()

    with gr.Blocks(title="clipforget") as demo:
        gr.Markdown("# clipforget — make CLIP forget an image subgroup\n"
                    "Forget (relative-Fisher LoRA) → remind (BN-aligned distillation) → restore (model soup θ(α)). "
                    "Set up a task, run it in the background, then slide α and audit accuracy and retrieval.")
        ws_browser = gr.BrowserState(None, storage_key="clipforget-workspace", secret=secret)
        ws = gr.State("")
        job_id = gr.State("")
        run_id = gr.State("")

        with gr.Tabs():
            with gr.Tab("1 · Set up and run"):
                with gr.Row():
                    model = gr.Dropdown(service.available_models(), value=cfg.model, allow_custom_value=True,
                                        label="Model", info="embedded, an open_clip NAME:TAG, or a checkpoint folder",
                                        scale=3)
                    profile = gr.Radio(list(PROFILES), value=default_profile, label="Run profile",
                                       info="quick: seconds (UI check) · fast: minutes · full: the paper's settings",
                                       scale=2)
                model_msg = gr.Markdown()
                with gr.Tabs():
                    with gr.Tab("Preset"):
                        with gr.Row():
                            first = PRESETS["cifar10-class"]
                            preset = gr.Dropdown([(get_setting(p.setting).description if p.name != "living17-monkey"
                                                   else p.title, k) for k, p in PRESETS.items()],
                                                 value=first.name, label="Preset", scale=3)
                            option = gr.Dropdown(first.choices(), value=first.default_choice(),
                                                 label=first.choice_label, scale=1, allow_custom_value=True)
                        start_preset = gr.Button("Run preset", variant="primary")
                    with gr.Tab("Upload galleries"):
                        with gr.Row():
                            forget_files = gr.File(file_count="multiple", label="Forget gallery (images or .zip)")
                            retain_files = gr.File(file_count="multiple", label="Retain gallery (images or .zip)")
                            cal_files = gr.File(file_count="multiple",
                                                label="Calibration gallery, optional (.zip with forget/ and retain/)")
                        with gr.Row():
                            label = gr.Textbox(label="Coarse label the forget images lose", placeholder="monkey")
                            retain_label = gr.Textbox(label="Retain label (blank: sub-folder names of the zip)",
                                                      placeholder="monkey")
                        limits = (f"Limits: {cfg.max_upload_mb:g} MB per file, {cfg.max_total_upload_mb:g} MB per "
                                  f"gallery, {cfg.max_pixels / 1e6:g} Mpixel per image.")
                        gr.Markdown(limits)
                        with gr.Row():
                            check = gr.Button("Check uploads")
                            start_upload = gr.Button("Run on uploads", variant="primary")
                        upload_report = gr.Markdown()
                        skipped = gr.Dataframe(pd.DataFrame(columns=["gallery", "file", "reason"]),
                                               label="Skipped files", interactive=False, max_height=240)
                status = gr.HTML(render_status(None), label="Run")
                cancel = gr.Button("Cancel run", variant="stop")

            with gr.Tab("2 · Explore and export"):
                with gr.Row():
                    runs = gr.Dropdown([], label="Runs (this workspace; kept across restarts)", scale=4,
                                       allow_custom_value=True)
                    refresh = gr.Button("↻ Refresh", scale=1)
                    open_btn = gr.Button("Open", variant="primary", scale=1)
                run_info = gr.Markdown("Open a finished run.")
                alpha = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="α  (θ(α) = α·θ_unlearned + (1−α)·θ_original)")
                with gr.Row():
                    plot = gr.Plot(label="Zero-shot accuracy vs α")
                    metrics = gr.Dataframe(label="Metrics at α (evaluation sets, with the Score)", interactive=False)
                with gr.Row():
                    prompt = gr.Textbox(value="airplane", label="Retrieval prompt", scale=3)
                    gallery_name = gr.Dropdown(service.galleries.names(), value=cfg.default_gallery, label="Gallery",
                                               scale=2, allow_custom_value=True)
                gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts")
                retrieval_msg = gr.Markdown()
                with gr.Row():
                    before = gr.Gallery(label="Original model (⬅ LEFT: gone from θ(α)'s top-k)", columns=6,
                                        height=300, object_fit="contain", elem_id="cf-before", allow_preview=False)
                    after = gr.Gallery(label="θ(α) (➡ NEW: entered the top-k)", columns=6, height=300,
                                       object_fit="contain", elem_id="cf-after", allow_preview=False)
                with gr.Row():
                    export_btn = gr.Button("Export θ(α) (safetensors + model card)")
                    export_file = gr.File(label="Download", interactive=False, height=90)

        # --- callbacks ----------------------------------------------------------------------------------------

        def init(stored: str | None, request: gr.Request):
            owner = stored if stored and re.fullmatch(r"w[A-Za-z0-9]{8,63}", stored) else service.workspaces.new_id()
            active = service.runs.backend.active(owner)
            choices = _run_choices(service.runs.list_runs(owner))
            snap = service.runs.status(owner)
            return (owner, owner, active[-1]["id"] if active else "", render_status(snap),
                    gr.update(choices=choices, value=choices[0][1] if choices else None))

        @_errors
        def check_model(spec: str):
            try:
                bundle = service.bundle(spec)
            except ClipforgetError as err:
                gr.Warning(str(err))
                return f"⚠️ **{spec}** cannot be used here: {html.escape(str(err))}"
            return f"Model **{spec}** ready on {bundle.device} (input {bundle.image_size} px)."

        def preset_changed(name: str):
            p = PRESETS.get(name)
            if p is None:
                return gr.update()
            return gr.update(choices=p.choices(), value=p.default_choice(), label=p.choice_label,
                             interactive=p.has_choice())

        def _save_all(owner: str, upload_id: str, f, r, c) -> None:
            for kind, files in (("forget", f), ("retain", r), ("calibration", c)):
                service.runs.save_uploads(owner, kind, _paths(files), upload_id)

        @_errors
        def check_uploads(f, r, c, label_text, retain_text, ws_value, request: gr.Request):
            owner = _owner(ws_value, request)
            _save_all(owner, "preview", f, r, c)
            root = service.workspaces.path(owner) / "uploads" / "preview"
            rows, lines = [], []
            for kind, lab in (("forget", label_text or "forget"), ("retain", retain_text or None),
                              ("calibration", None)):
                rep = service.runs.inspect_upload(root / kind, lab)
                if rep.files or rep.skipped:
                    lines.append("- " + rep.summary(kind))
                rows += [[kind, p, why] for p, why in rep.skipped]
            text = "\n".join(lines) or "Nothing uploaded yet."
            return text, pd.DataFrame(rows, columns=["gallery", "file", "reason"])

        @_errors
        def start_from_preset(name, opt, spec, prof, ws_value, request: gr.Request):
            owner = _owner(ws_value, request)
            snap = service.runs.start_preset(owner, name, opt, spec, prof)
            return snap["id"], render_status(snap)

        @_errors
        def start_from_uploads(f, r, c, label_text, retain_text, spec, prof, ws_value, request: gr.Request):
            owner = _owner(ws_value, request)
            upload_id = service.runs.new_upload_id()
            _save_all(owner, upload_id, f, r, c)
            snap = service.runs.start_upload(owner, upload_id, label_text, retain_text, spec, prof)
            return snap["id"], render_status(snap)

        def watch(current: str, ws_value, request: gr.Request, progress=gr.Progress()):
            """Follow the run until it ends (progress bar + per-stage table); other controls stay usable."""
            owner = _owner(ws_value, request)
            if not current or service.runs.snapshot(owner, current) is None:
                yield render_status(service.runs.status(owner))
                return
            while True:
                snap = service.runs.snapshot(owner, current) or {}
                progress(overall(snap), desc=snap.get("message", ""))
                yield render_status(snap)
                if snap["state"] not in STATES_ACTIVE:
                    return
                time.sleep(0.5)

        def after_run(current: str, ws_value, request: gr.Request):
            owner = _owner(ws_value, request)
            choices = _run_choices(service.runs.list_runs(owner))
            snap = service.runs.snapshot(owner, current) if current else None
            finished = snap is not None and snap.get("state") == "done"
            value = current if finished else (choices[0][1] if choices else None)
            return gr.update(choices=choices, value=value)

        def do_cancel(current: str, ws_value, request: gr.Request):
            owner = _owner(ws_value, request)
            ok = service.runs.cancel(owner, current or None)
            gr.Info("cancelling the run…" if ok else "no run to cancel")
            return render_status(service.runs.status(owner))

        def refresh_runs(ws_value, request: gr.Request):
            choices = _run_choices(service.runs.list_runs(_owner(ws_value, request)))
            return gr.update(choices=choices, value=choices[0][1] if choices else None)

        def explore(view, a: float, text: str, gal: str):
            fig = PlotData(type="plotly", plot=view.figure_json(a))
            headers, rows = view.metrics_table(a)
            table = pd.DataFrame(rows, columns=headers)
            if not text or not text.strip():
                return fig, table, "Type a prompt to compare retrieval.", [], []
            try:
                res = view.retrieve(text, a, gal)
            except ClipforgetError as err:
                return fig, table, f"⚠️ {html.escape(str(err))}", [], []
            msg = (f"**{text.strip()}** in *{gal}*: top-{len(res['before'])} at α={a:.2f} — "
                   f"{len(res['left'])} left, {len(res['entered'])} entered.")
            return (fig, table, msg, _gallery_items(service, res["before"], False),
                    _gallery_items(service, res["after"], True))

        @_errors
        def open_run(rid: str, text: str, gal: str, ws_value, request: gr.Request, progress=gr.Progress()):
            owner = _owner(ws_value, request)
            if not rid:
                raise DataError("pick a run first")
            view = service.runs.open(owner, rid)
            if not view.has_grid(gal):
                progress(0.0, desc=f"embedding gallery {gal} under θ(α) (once per run)")
                view.grid(gal, lambda s, f, m: progress(f, desc=m))
            d = view.task
            summary = (f"**{html.escape(view.title)}** · model `{html.escape(view.model_spec)}` · profile "
                       f"{view.spec.profile if view.spec else '?'} · forget {d.get('forget_images', '?')} / retain "
                       f"{d.get('retain_images', '?')} images · calibrated α* = {view.chosen_alpha:.2f} · "
                       f"Score at α*: {view.metrics.get('score', float('nan')):.1f}")
            if d.get("skipped"):
                summary += f" · {len(d['skipped'])} input files skipped"
            a = view.chosen_alpha
            return (rid, summary, gr.update(value=a), *explore(view, a, text, gal))

        @_errors
        def set_alpha(a: float, rid: str, text: str, gal: str, ws_value, request: gr.Request):
            owner = _owner(ws_value, request)
            if not rid:
                raise DataError("open a run first")
            view = service.runs.open(owner, rid)
            if not view.has_grid(gal):
                raise DataError(f"gallery {gal} is not embedded for this run yet: press Open")
            return explore(view, float(a), text, gal)

        @_errors
        def do_export(a: float, rid: str, ws_value, request: gr.Request):
            owner = _owner(ws_value, request)
            if not rid:
                raise DataError("open a run first")
            return str(service.export(owner, rid, float(a)))

        # --- wiring --------------------------------------------------------------------------------------------
        demo.load(init, [ws_browser], [ws, ws_browser, job_id, status, runs], api_visibility="private").then(
            watch, [job_id, ws], [status], concurrency_limit=None, show_progress="minimal", api_visibility="private")
        model.change(check_model, [model], [model_msg], api_name="check_model")
        preset.change(preset_changed, [preset], [option], api_visibility="private")
        check.click(check_uploads, [forget_files, retain_files, cal_files, label, retain_label, ws],
                    [upload_report, skipped], api_name="check_uploads")
        explore_out = [plot, metrics, retrieval_msg, before, after]
        for button, fn, inputs, name in (
            (start_preset, start_from_preset, [preset, option, model, profile, ws], "start_preset"),
            (start_upload, start_from_uploads,
             [forget_files, retain_files, cal_files, label, retain_label, model, profile, ws], "start_upload"),
        ):
            button.click(fn, inputs, [job_id, status], api_name=name).success(
                watch, [job_id, ws], [status], concurrency_limit=None, api_name=f"watch_{name}").then(
                after_run, [job_id, ws], [runs], api_visibility="private")
        cancel.click(do_cancel, [job_id, ws], [status], api_name="cancel", concurrency_limit=None)
        refresh.click(refresh_runs, [ws], [runs], api_name="list_runs")
        open_btn.click(open_run, [runs, prompt, gallery_name, ws],
                       [run_id, run_info, alpha, *explore_out], api_name="open_run")
        alpha_inputs = [alpha, run_id, prompt, gallery_name, ws]
        alpha.change(set_alpha, alpha_inputs, explore_out, api_name="set_alpha", trigger_mode="always_last",
                     show_progress="hidden", concurrency_limit=8)
        prompt.change(set_alpha, alpha_inputs, explore_out, api_name="retrieve", show_progress="hidden",
                      trigger_mode="always_last")  # examples and typing update the galleries directly
        def gallery_changed(rid: str, text: str, gal: str, ws_value, request: gr.Request, progress=gr.Progress()):
            if not rid:  # nothing opened yet: the choice applies when a run is opened
                return (gr.skip(),) * (3 + len(explore_out))
            return open_run(rid, text, gal, ws_value, request, progress)

        gallery_name.change(gallery_changed, [run_id, prompt, gallery_name, ws],
                            [run_id, run_info, alpha, *explore_out], api_visibility="private")
        export_btn.click(do_export, [alpha, run_id, ws], [export_file], api_name="export")
    demo.queue(default_concurrency_limit=4)
    return demo


def _paths(files) -> list[str]:
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]


def launch_kwargs(service: AppServices, host: str = "127.0.0.1", port: int = 7860, share: bool = False
                  ) -> dict[str, Any]:
    """Arguments for ``demo.launch``: address, sharing, upload size limit, the folders results are served from."""
    return {
        "server_name": host,
        "server_port": port,
        "share": share,
        # a zip may hold many images: the per-file limit here is the gallery limit; images are checked one by one
        "max_file_size": f"{int(service.config.max_total_upload_mb * 1e6)}b",
        "allowed_paths": [str(service.cache / "thumbs"), str(service.workspaces.root)],
        "css": CSS,
        "theme": gr.themes.Soft(),
        "footer_links": ["api", "gradio"],
    }

