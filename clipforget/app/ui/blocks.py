"""The Gradio app: :func:`build_ui` wires the layout's events to the handlers; :func:`launch_kwargs` says how to
serve it (address, upload limit, the few folders Gradio may read, the security middleware)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from ..security import SecurityMiddleware
from ..service import AppServices
from .gradio_guard import own_cors_only, quiet_input_errors
from .handlers import Handlers
from .layout import build_layout
from .render import CSS

# Gradio recomputes its monitoring summary (a pandas group-by over the last 10,000 events) after every event unless
# told otherwise; the app closes the monitoring routes, so once per 1,000 events is plenty (docs/decisions.md D12)
ANALYTICS_CACHE_FREQUENCY = "1000"


def build_ui(services: AppServices, default_profile: str = "fast") -> gr.Blocks:
    """The app's Blocks (launch it with ``demo.launch(**launch_kwargs(services, ...))``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", ANALYTICS_CACHE_FREQUENCY)  # read by Blocks' queue
    if importlib.util.find_spec("matplotlib") is None:
        # Gradio tries ``import matplotlib`` twice per event; without it installed each try searches sys.path:
        # a None entry makes the failing import immediate (docs/decisions.md D12)
        sys.modules.setdefault("matplotlib", None)  # type: ignore[arg-type]
    # retrieval thumbnails are Gradio static files: served from where they are, not hashed and copied per event
    gr.set_static_paths([thumbnail_root(services)])
    h = Handlers(services)
    # the read-only explore events share one pool of slots sized to the machine; training stays in the workers
    explore = {"concurrency_limit": services.config.explore_concurrency, "concurrency_id": "explore"}
    f = h.errors  # every callback: library errors become a message box
    # Gradio keeps every uploaded file and every returned file in its cache folder: clear what is older than 6 h,
    # hourly (a file handed out again is touched, so thumbnails in use stay)
    with gr.Blocks(title="clipforget", delete_cache=(3600, 6 * 3600)) as demo:
        ui = build_layout(services, default_profile)
        demo.load(f(h.init), None, [ui.job_id, ui.status, ui.runs, ui.model], api_visibility="private").then(
            f(h.watch), [ui.job_id], [ui.status], concurrency_limit=None, show_progress="hidden",
            api_visibility="private")
        ui.model.change(f(h.check_model), [ui.model], [ui.model_msg], api_name="check_model")
        ui.preset.change(f(h.preset_changed), [ui.preset], [ui.option], api_visibility="private")
        ui.check.click(f(h.check_uploads), [ui.forget_files, ui.retain_files, ui.cal_files, ui.label, ui.retain_label],
                       [ui.upload_report, ui.skipped, ui.previews], api_name="check_uploads")

        def start(button: gr.Button, fn: Callable, inputs: list, name: str, more_outputs: tuple = ()) -> None:
            # one progress display, the app's stage bars: no Gradio overlay or timer on the run's events
            button.click(f(fn), inputs, [ui.job_id, ui.status, *more_outputs], api_name=name,
                         show_progress="hidden").success(
                f(h.watch), [ui.job_id], [ui.status], concurrency_limit=None, api_name=f"watch_{name}",
                show_progress="hidden").then(
                f(h.after_run), [ui.job_id], [ui.runs, ui.model], api_visibility="private")

        start(ui.start_preset, h.start_from_preset, [ui.preset, ui.option, ui.model, ui.profile], "start_preset")
        start(ui.start_upload, h.start_from_uploads, [ui.forget_files, ui.retain_files, ui.cal_files, ui.label,
                                                      ui.retain_label, ui.model, ui.profile, ui.forget_prompts],
              "start_upload")
        ui.cancel.click(f(h.do_cancel), [ui.job_id], [ui.status], api_name="cancel", concurrency_limit=None,
                        show_progress="hidden")
        ui.refresh.click(f(h.refresh_runs), None, [ui.runs], api_name="list_runs", **explore)
        ui.delete_btn.click(f(h.delete_run), [ui.runs], [ui.runs, ui.run_id], api_name="delete_run")
        explore_out = [ui.plot, ui.metrics, ui.verdict, ui.retrieval_msg, ui.before, ui.after]  # Handlers._explore
        ui.open_btn.click(f(h.open_run), [ui.runs, ui.prompt, ui.gallery_name, ui.run_id],
                          [ui.run_id, ui.run_info, ui.alpha, ui.prompt, *explore_out], api_name="open_run",
                          **explore).success(
            f(h.stress_show), [ui.run_id], [ui.stress_status, ui.stress_result], api_name="stress_show", **explore)
        # events with the slider among their inputs skip Gradio's preprocessing, which lets NaN through and answers
        # a non-number without a message: the handlers check every input themselves (clipforget.app.validate)
        alpha_inputs = [ui.alpha, ui.run_id, ui.prompt, ui.gallery_name]
        for trigger, name in ((ui.alpha, "set_alpha"), (ui.prompt, "retrieve")):  # the prompt: examples, typing
            trigger.change(f(h.set_alpha), alpha_inputs, explore_out, api_name=name, trigger_mode="always_last",
                           show_progress="hidden", preprocess=False, **explore)
        ui.gallery_name.change(f(h.gallery_changed), [ui.run_id, ui.prompt, ui.gallery_name],
                               [ui.run_id, ui.run_info, ui.alpha, ui.prompt, *explore_out], api_visibility="private",
                               **explore)
        ui.export_btn.click(f(h.do_export), [ui.alpha, ui.run_id], [ui.export_file], api_name="export",
                            preprocess=False)
        ui.report_btn.click(f(h.do_report), [ui.alpha, ui.run_id, ui.prompt, ui.gallery_name], [ui.report_file],
                            api_name="report", preprocess=False)
        pick_inputs = [ui.pick_target, ui.picks, ui.run_id, ui.alpha, ui.prompt, ui.gallery_name]
        ui.before.select(f(h.pick), pick_inputs, [ui.picks, ui.picks_msg], api_visibility="private")
        ui.after.select(f(h.pick_after), pick_inputs, [ui.picks, ui.picks_msg], api_visibility="private")
        ui.clear_picks.click(f(h.clear), None, [ui.picks, ui.picks_msg], api_visibility="private")
        start(ui.start_selection, h.start_from_selection, [
            ui.gallery_name, ui.sel_forget_prompt, ui.sel_forget_k, ui.sel_retain_prompt, ui.sel_retain_k, ui.sel_label,
            ui.sel_retain_label, ui.sel_also, ui.picks, ui.run_id, ui.model, ui.profile], "start_selection",
              (ui.selection_msg,))
        ui.compare_refresh.click(f(h.compare_choices), None, [ui.compare_runs], api_name="compare_choices", **explore)
        ui.compare_btn.click(f(h.compare), [ui.compare_runs, ui.compare_prompt, ui.gallery_name],
                             [ui.compare_plot, ui.compare_metrics, ui.compare_top], api_name="compare", **explore)
        # the stress test holds a model and minutes of CPU: one at a time on the server. No queue limit here: a second
        # request reaches the service at once and is refused with a message instead of waiting silently behind the first
        ui.stress_btn.click(f(h.stress_run), [ui.run_id, ui.gallery_name, ui.stress_relearn, ui.stress_texts],
                            [ui.stress_status, ui.stress_result], api_name="stress_test", concurrency_limit=None,
                            show_progress="minimal")
        ui.api_token.click(f(h.new_api_token), None, [ui.api_token_out], api_name="new_api_token")
    demo.queue(default_concurrency_limit=4)
    return quiet_input_errors(demo)


def thumbnail_root(services: AppServices) -> Path:
    """The shared gallery thumbnails (:meth:`clipforget.app.galleries.Galleries.thumbnail`)."""
    root = services.galleries.thumbnail_root
    root.mkdir(parents=True, exist_ok=True)
    return root


def served_roots(services: AppServices):
    """Where ``/gradio_api/file=`` may read: Gradio's own upload / cache folder (it copies every returned file
    there under a content hash) and the gallery thumbnails, nothing else of the app's cache. Within them the
    middleware serves a file only to a workspace it was handed to."""
    roots = [get_upload_folder(), str(thumbnail_root(services))]
    return lambda: roots


def launch_kwargs(services: AppServices, host: str = "127.0.0.1", port: int = 7860, share: bool = False
                  ) -> dict[str, Any]:
    """Arguments for ``demo.launch``: address, sharing, upload size limit, allowed folders, the middleware.

    ``allowed_paths`` lists only what Gradio must be allowed to *copy* into its cache when an event returns it: the
    shared gallery thumbnails; the security middleware keeps ``/file=`` from serving that folder directly, and serves
    exports itself (``/clipforget/download/<name>``, to their workspace only).
    """
    cfg = services.config
    middleware = Middleware(SecurityMiddleware, tokens=services.tokens, new_workspace=services.workspaces.new_id,
                            served_roots=served_roots(services), bindings=services.bindings,
                            download=services.download_path, thumbnail=services.galleries.thumbnail_file,
                            cookie_max_age=int(cfg.workspace_ttl_days * 86400),
                            max_upload_request_bytes=int(cfg.max_total_upload_mb * 1e6) + 10_000_000,
                            allowed_origins=list(cfg.allowed_origins))
    return {
        "server_name": host,
        "server_port": port,
        "share": share,
        # a zip may hold many images: the per-file limit here is the gallery limit; images are checked one by one
        "max_file_size": f"{int(cfg.max_total_upload_mb * 1e6)}b",
        "allowed_paths": [str(thumbnail_root(services))],
        # the middleware decides CORS alone: Gradio's own CORS layer goes before the first request
        "app_kwargs": {"middleware": [middleware], "lifespan": own_cors_only()},
        "css": CSS,
        "theme": gr.themes.Soft(),
        "footer_links": ["api", "gradio"],
    }
