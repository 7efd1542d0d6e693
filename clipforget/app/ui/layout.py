"""The page's components, built inside a ``gr.Blocks`` context and returned in one :class:`Layout`: no callbacks.

Dropdowns accept custom values because API clients send ids the page never listed (a run id, ``run:<id>``); every
value is checked on the server by the handlers and the services, never by the widget.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import gradio as gr
import pandas as pd

from clipforget.jobs.profiles import PROFILES
from clipforget.pipeline.report import gallery_title, stress_html
from clipforget.settings import get_setting

from ..config import EXAMPLE_PROMPTS
from ..messages import md
from ..presets import DEFAULT_PRESET, PRESETS
from ..service import AppServices
from ..stress import MAX_TEXT_CHARS, MAX_TEXTS
from .render import NO_RUN, SKIPPED_COLUMNS

UPLOAD_BOX_PX = 150


@dataclass
class Layout:
    """Every component a callback reads or writes."""

    job_id: gr.State
    run_id: gr.State
    model: gr.Dropdown
    profile: gr.Radio
    model_msg: gr.Markdown
    preset: gr.Dropdown
    option: gr.Dropdown
    start_preset: gr.Button
    forget_files: gr.File
    retain_files: gr.File
    cal_files: gr.File
    label: gr.Textbox
    retain_label: gr.Textbox
    check: gr.Button
    start_upload: gr.Button
    upload_report: gr.Markdown
    previews: gr.Gallery
    skipped: gr.Dataframe
    status: gr.HTML
    cancel: gr.Button
    runs: gr.Dropdown
    refresh: gr.Button
    open_btn: gr.Button
    delete_btn: gr.Button
    run_info: gr.Markdown
    alpha: gr.Slider
    verdict: gr.HTML
    plot: gr.Plot
    metrics: gr.Dataframe
    prompt: gr.Textbox
    gallery_name: gr.Dropdown
    retrieval_msg: gr.Markdown
    before: gr.Gallery
    after: gr.Gallery
    export_btn: gr.Button
    export_file: gr.HTML
    api_token: gr.Button
    api_token_out: gr.Textbox
    forget_prompts: gr.Textbox
    report_btn: gr.Button
    report_file: gr.HTML
    sel_forget_prompt: gr.Textbox
    sel_forget_k: gr.Number
    sel_retain_prompt: gr.Textbox
    sel_retain_k: gr.Number
    sel_label: gr.Textbox
    sel_retain_label: gr.Textbox
    sel_also: gr.Textbox
    pick_target: gr.Radio
    picks: gr.State
    picks_msg: gr.Markdown
    clear_picks: gr.Button
    start_selection: gr.Button
    selection_msg: gr.Markdown
    compare_runs: gr.Dropdown
    compare_refresh: gr.Button
    compare_prompt: gr.Textbox
    compare_btn: gr.Button
    compare_plot: gr.Plot
    compare_metrics: gr.Dataframe
    compare_top: gr.HTML
    stress_texts: gr.Textbox
    stress_relearn: gr.Checkbox
    stress_btn: gr.Button
    stress_status: gr.HTML
    stress_result: gr.HTML


def build_layout(services: AppServices, default_profile: str = "fast") -> Layout:
    """Create the components (call inside ``with gr.Blocks(): ...``)."""
    cfg = services.config
    policy = services.runs.policy
    gr.Markdown("# clipforget — make CLIP forget an image subgroup\n"
                "Three stages: the model forgets the photos, is reminded of what it keeps, and is blended back with "
                "the original as far as needed (α). Set up a task and run it here, then slide α in tab 2 and see "
                "what the model still finds.")
    job_id, run_id = gr.State(""), gr.State("")
    with gr.Tabs():
        with gr.Tab("1 · Set up and run"):
            with gr.Row():
                model = gr.Dropdown(policy.choices(), value=cfg.model, allow_custom_value=True,
                                    label="Model", info="a model this server offers, or one of your finished runs",
                                    scale=3)
                profile = gr.Radio(list(PROFILES), value=default_profile, label="Run profile",
                                   info="quick: under a minute (UI check) · fast: minutes · full: the paper's settings",
                                   scale=2)
            model_msg = gr.Markdown()
            with gr.Tabs():
                with gr.Tab("Preset"):
                    with gr.Row():
                        first = PRESETS[DEFAULT_PRESET]
                        preset = gr.Dropdown([(get_setting(p.setting).description if p.name != "living17-monkey"
                                               else p.title, k) for k, p in PRESETS.items()],
                                             value=first.name, label="Preset", scale=3)
                        option = gr.Dropdown(first.choices(), value=first.default_choice(),
                                             label=first.choice_label, scale=1, allow_custom_value=True,
                                             interactive=first.has_choice())
                    start_preset = gr.Button("Run preset", variant="primary")
                with gr.Tab("Upload galleries"):
                    # a fixed height: 80 photos scroll inside the box instead of pushing Run down the page; the counts
                    # and a thumbnail strip below say what was received
                    with gr.Row():
                        forget_files = gr.File(file_count="multiple", label="Forget gallery (images or .zip)",
                                               height=UPLOAD_BOX_PX, elem_id="cf-forget-files")
                        retain_files = gr.File(file_count="multiple", label="Retain gallery (images or .zip)",
                                               height=UPLOAD_BOX_PX, elem_id="cf-retain-files")
                        cal_files = gr.File(file_count="multiple", height=UPLOAD_BOX_PX,
                                            label="Calibration gallery, optional (.zip with forget/ and retain/)")
                    with gr.Row():
                        label = gr.Textbox(label="Coarse label the forget images lose", placeholder="monkey",
                                           max_length=100)
                        retain_label = gr.Textbox(label="Retain label (blank: sub-folder names of the zip)",
                                                  placeholder="monkey", max_length=100)
                        forget_prompts = gr.Textbox(
                            label="Also forget as (optional, comma separated; the method finds names itself too)",
                            placeholder="another name of these photos", max_length=300)
                    quota = f", {cfg.workspace_quota_mb:g} MB per workspace" if cfg.quota_bytes else ""
                    gr.Markdown(f"Limits: {cfg.max_upload_mb:g} MB per file, {cfg.max_total_upload_mb:g} MB per "
                                f"gallery, {cfg.max_pixels / 1e6:g} Mpixel per image{quota}. Labels come from the "
                                "label fields or a zip's sub-folders, never from file names; every file is kept.")
                    with gr.Row():
                        check = gr.Button("Check uploads")
                        start_upload = gr.Button("Run on uploads", variant="primary")
                    upload_report = gr.Markdown()
                    # the title above the strip: Gradio's floating label covered the first thumbnails
                    gr.Markdown("**Previews** (re-encoded thumbnails, after Check uploads)")
                    previews = gr.Gallery(label="Previews (re-encoded thumbnails)", columns=8, height=140,
                                          allow_preview=False, object_fit="contain", elem_id="cf-previews",
                                          show_label=False)
                    skipped = gr.Dataframe(pd.DataFrame(columns=SKIPPED_COLUMNS), label="Skipped files",
                                           interactive=False, max_height=240)
            status = gr.HTML(NO_RUN, label="Run", elem_id="cf-status")
            cancel = gr.Button("Cancel run", variant="stop", elem_id="cf-cancel")  # shown while a run is active (CSS)

        with gr.Tab("2 · Explore and export"):
            with gr.Row():
                runs = gr.Dropdown([], label="Runs (this workspace; kept across restarts)", scale=4,
                                   allow_custom_value=True, elem_id="cf-runs")
                # buttons at their own width: the run's line (title, Score, α*, where) fits at 1280 px
                refresh = gr.Button("↻ Refresh", scale=0, min_width=140)
                open_btn = gr.Button("Open", variant="primary", scale=0, min_width=140)
                delete_btn = gr.Button("Delete run", variant="stop", scale=0, min_width=140)
            run_info = gr.Markdown("Open a finished run.", elem_id="cf-run-info")
            alpha = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="α  (θ(α) = α·θ_unlearned + (1−α)·θ_original)")
            verdict = gr.HTML("", elem_id="cf-verdict")
            with gr.Row():
                plot = gr.Plot(label="Zero-shot accuracy vs α")
                metrics = gr.Dataframe(label="Metrics at α (evaluation sets, with the Score)", interactive=False,
                                       wrap=True, column_widths=["30%", "12%", "12%", "15%", "18%", "13%"])
            with gr.Row():
                prompt = gr.Textbox(value=EXAMPLE_PROMPTS[1], label="Retrieval prompt", scale=3, max_length=200)
                gallery_name = gr.Dropdown(services.galleries.names(), value=cfg.default_gallery, label="Gallery",
                                           scale=2, allow_custom_value=True)
            gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts")
            retrieval_msg = gr.Markdown()
            with gr.Row():
                # titles above the thumbnails, not Gradio's label floating over the first row; five columns fit
                # whole thumbnails at 1280 px
                with gr.Column():
                    gr.Markdown(f"**{md(gallery_title(False))}**")
                    before = gr.Gallery(label="original model", columns=5, height="auto", object_fit="contain",
                                        elem_id="cf-before", allow_preview=False, show_label=False)
                with gr.Column():
                    gr.Markdown(f"**{md(gallery_title(True))}**")
                    after = gr.Gallery(label="θ(α)", columns=5, height="auto", object_fit="contain",
                                       elem_id="cf-after", allow_preview=False, show_label=False)
            with gr.Row():
                export_btn = gr.Button("Export θ(α) (safetensors + model card)")
                export_file = gr.HTML("", label="Download")
            with gr.Row():
                report_btn = gr.Button("Report (one HTML file: curves, metrics, before / after top-k)")
                report_file = gr.HTML("", label="Report", elem_id="cf-report")
            with gr.Accordion("Forget from the gallery", open=False, elem_id="cf-selection"):
                gr.Markdown("A prompt's top-k (the original model's ranking in this gallery) and images you pick "
                            "become the forget set; another prompt's top-k minus those, and picked images, the "
                            "retain set. A fifth of each is held out for calibration and evaluation and never "
                            "trained on; the retrieval panel marks images a run trained on (● TRAINED ON).")
                with gr.Row():
                    sel_forget_prompt = gr.Textbox(value="marmoset", label="Forget: prompt", max_length=200, scale=3)
                    sel_forget_k = gr.Number(value=40, precision=0, minimum=0, maximum=2000, label="top-k", scale=1)
                    sel_retain_prompt = gr.Textbox(value="monkey", label="Retain: prompt", max_length=200, scale=3)
                    sel_retain_k = gr.Number(value=200, precision=0, minimum=0, maximum=2000, label="top-k", scale=1)
                with gr.Row():
                    sel_label = gr.Textbox(value="monkey", label="Coarse label the forget images lose", max_length=100)
                    sel_retain_label = gr.Textbox(value="monkey",
                                                  label="Retain label (blank: each image's gallery label)",
                                                  max_length=100)
                    sel_also = gr.Textbox(label="Also forget as (optional, comma separated)", max_length=300)
                with gr.Row():
                    pick_target = gr.Radio(["off", "forget", "retain"], value="off",
                                           label="A click on a retrieval thumbnail adds it to", scale=2)
                    picks_msg = gr.Markdown("No images picked.")
                    clear_picks = gr.Button("Clear picks", scale=1)
                picks = gr.State({"gallery": "", "forget": [], "retain": []})
                start_selection = gr.Button("Run on this selection", variant="primary")
                selection_msg = gr.Markdown()
            with gr.Accordion("API access", open=False):
                gr.Markdown("Scripts (gradio_client) get a workspace of their own automatically. To come back to "
                            "the same workspace later, create a token here once and send it in the "
                            "`X-Clipforget-Token` header: `Client(url, headers={'X-Clipforget-Token': token})`. "
                            "A token opens a new, empty workspace, never this page's.")
                api_token = gr.Button("New API token")
                api_token_out = gr.Textbox(label="API token (shown once; keep it secret)", interactive=False)
        with gr.Tab("3 · Compare runs"):
            with gr.Row():
                compare_runs = gr.Dropdown([], multiselect=True, label="Finished runs to compare (2 or more)",
                                           scale=4, elem_id="cf-compare-runs")
                compare_refresh = gr.Button("↻ Refresh runs", scale=1)
            with gr.Row():
                compare_prompt = gr.Textbox(value="marmoset", label="Prompt (top-k under each run's θ(α*), held-out "
                                            "images)", max_length=200, scale=4)
                compare_btn = gr.Button("Compare", variant="primary", scale=1)
            compare_plot = gr.Plot(label="Accuracy vs α, runs overlaid (one colour per run)", elem_id="cf-compare-plot")
            compare_metrics = gr.Dataframe(label="Metrics at each run's α*", interactive=False, wrap=True,
                                           elem_id="cf-compare-metrics")
            compare_top = gr.HTML("", elem_id="cf-compare-top")
        with gr.Tab("4 · Stress test"):
            gr.Markdown("**Is it really gone?** The run opened in tab 2, at its calibrated α*, over held-out photos "
                        "of the forgotten subgroup: (1) other names — hundreds of texts it could be found by "
                        "(synonyms, narrower and broader names, descriptions, names an attacker picks, yours); "
                        "(2) relearning — does a little plain fine-tuning bring it back; (3) unseen photos — "
                        "did the run forget the subgroup or only the photos it trained on?")
            with gr.Row():
                stress_texts = gr.Textbox(label=f"Your own texts to try (optional; one per line, {MAX_TEXTS} at most)",
                                          placeholder="a tiny monkey clinging to a branch", lines=3,
                                          max_lines=MAX_TEXTS, max_length=MAX_TEXTS * (MAX_TEXT_CHARS + 1), scale=3,
                                          elem_id="cf-stress-texts")
                with gr.Column(scale=2):
                    stress_relearn = gr.Checkbox(False, label="include relearning (a few minutes)",
                                                 elem_id="cf-stress-relearn")
                    stress_btn = gr.Button("Is it really gone? Run the stress test", variant="primary",
                                           elem_id="cf-stress-run")
            stress_status = gr.HTML("", elem_id="cf-stress-status")
            stress_result = gr.HTML(stress_html({}), elem_id="cf-stress-result")
    components = locals()  # every component above is a local named as its Layout field
    return Layout(**{f.name: components[f.name] for f in fields(Layout)})
