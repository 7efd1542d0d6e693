"""The report of an opened run, as the app writes it: the library's report (:mod:`clipforget.pipeline.report`) over
the run view's held-out retrieval at the slider's alpha, written into the workspace's exports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clipforget.evaluation import MIN_TRUSTED_IMAGES
from clipforget.pipeline.folder import forget_text_subject
from clipforget.pipeline.report import PromptResult, ReportHit, ReportInputs, write_report

from . import validate
from .config import EXAMPLE_PROMPTS
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


@dataclass
class Verdict:
    """What the run did at one alpha, for a stakeholder: how many held-out photos of the subgroup its names and its
    label still find in the top-k (original -> theta(alpha)), what was kept, and what is too small to trust."""

    alpha: float  # the alpha the retrieval counts are at (the gallery's grid point nearest the slider)
    k: int
    label: list[tuple[str, int, int]] = field(default_factory=list)  # (name, before, after) per coarse label
    names: list[tuple[str, int, int]] = field(default_factory=list)  # the same per name the run forgot
    kept_sets: list[tuple[str, float]] = field(default_factory=list)  # (set, accuracy ratio) of sets it keeps
    unrelated: list[tuple[str, int]] = field(default_factory=list)  # (prompt, top-k images still there)
    small_sets: list[tuple[str, int]] = field(default_factory=list)  # (set, images) below MIN_TRUSTED_IMAGES
    score: str = ""

    @property
    def forgotten_as(self) -> list[tuple[str, int, int]]:
        """The names the subgroup is found by less often now (the others were tried, not forgotten)."""
        return [n for n in self.names if n[2] < n[1]]


def verdict(view: RunView, alpha: float, gallery: str, k: int = REPORT_K) -> Verdict:
    """The :class:`Verdict` of the opened run at ``alpha`` over ``gallery``'s held-out images."""
    alpha = validate.alpha(alpha)
    found = Verdict(float(view.grid(gallery).alphas[view.grid(gallery).nearest(alpha)]), k)
    labels = [str(x) for x in view.task.get("forget_labels") or []]
    for text in [*(f"a photo of a {x}." for x in labels), *view.folder.forget_texts()][:MAX_PROMPTS]:
        before, after = prompt_result(view, text, alpha, gallery, k).forgotten_counts
        name = forget_text_subject(text)
        (found.label if name in labels else found.names).append((name, before, after))
    rows = view.metrics_table(alpha)[1]
    sizes = view.task.get("eval_sets") or {}
    for name, role, images, *_, ratio in rows[:-1]:
        images = images if isinstance(images, int) else sizes.get(name)
        if role != "target":
            found.kept_sets.append((str(name), float(ratio)))
        if isinstance(images, int) and images < MIN_TRUSTED_IMAGES:
            found.small_sets.append((str(name), images))
    found.score = str(rows[-1][-1])
    subject = " ".join([*labels, *(n[0] for n in found.names)]).lower()
    for prompt in [p for p in EXAMPLE_PROMPTS if p.split()[-1] not in subject][:2]:
        result = view.retrieve(prompt, alpha, gallery, k, held_out_only=True)
        found.unrelated.append((prompt, len(result["before"]) - len(result["left"])))
    return found
