"""The report of an opened run, as the app writes it: the library's report (:mod:`clipforget.pipeline.report`) over
the run view's held-out retrieval at the slider's alpha, written into the workspace's exports."""

from __future__ import annotations

from pathlib import Path

from clipforget.pipeline.report import PromptResult, ReportHit, ReportInputs, write_report

from . import validate
from .explore import RunView
from .workspaces import export_stem

REPORT_K = 20
MAX_PROMPTS = 6


def report_prompts(view: RunView, prompt: str) -> list[str]:
    """The audit prompts: the one typed in the retrieval panel, then the texts the run forgot (at most six)."""
    texts: dict[str, str] = {}
    for text in [prompt.strip(), *view.folder.forget_texts()]:
        texts.setdefault(text.rstrip(".").lower(), text)  # "a photo of a marmoset." is the typed prompt again
    return [t for t in texts.values() if t][:MAX_PROMPTS]


def prompt_result(view: RunView, prompt: str, alpha: float, gallery: str, k: int = REPORT_K) -> PromptResult:
    """One prompt's held-out top-k before / after, as the report shows it."""
    found = view.retrieve(prompt, alpha, gallery, k, held_out_only=True)

    def hits(items: list[dict]) -> list[ReportHit]:
        return [ReportHit(h["path"], h["label"], h["score"], h["mark"], h["forgotten"]) for h in items]

    rows = view.grid(gallery).rows
    return PromptResult(prompt, hits(found["before"]), hits(found["after"]), found["trained_in_gallery"], gallery,
                        len(rows) if rows is not None else len(view.galleries.get(view.model_spec, gallery)))


def report_name(run_id: str, alpha: float) -> str:
    """The report's file name in the exports (``export_stem``'s pattern: removed with its run)."""
    return f"{export_stem(run_id, alpha)}-report.html"


def write_view_report(view: RunView, exports_dir: Path, alpha: float, prompts: list[str], gallery: str) -> Path:
    """Write the opened run's report at ``alpha`` into ``exports_dir``."""
    alpha = validate.alpha(alpha)
    results = [prompt_result(view, p, alpha, gallery) for p in prompts]
    spec = view.spec
    inputs = ReportInputs(alpha, results, view.title, view.model_label, spec.profile if spec else "",
                          (spec.source or {}).get("described", {}) if spec else {},
                          spec.reproduce_command() if spec else "", view.metrics_table(alpha))
    return write_report(view.folder, inputs, Path(exports_dir) / report_name(view.dir.name, alpha))
