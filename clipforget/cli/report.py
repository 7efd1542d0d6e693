"""``report``: a run's audit report as one self-contained HTML file (opens offline, small enough to e-mail).

    python -m clipforget report --run runs/marmoset --index indexes/demo --prompt "a photo of a marmoset" \\
        --prompt "a photo of a monkey" --out marmoset-report.html

With ``--index`` the report holds each prompt's top-k before / after over that gallery's held-out images (images
the run trained on, recorded in its ``trained_on.json``, are left out); ``--prompt`` without ``--index`` is refused
with the prompts named; a report without both says in its retrieval section (and on stderr) that retrieval was left
out and how to add it.
The run's stress test (``clipforget stress``), where it has one, is a section of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from clipforget.core.devices import resolve_device
from clipforget.jobs.spec import RunSpec
from clipforget.models.encode import encode_text
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.report import ReportInputs, held_out_audit, run_gallery_masks, write_report
from clipforget.retrieval.index import load_index
from index_builder.alpha_grid import embeddings_at

from .common import add_finished_run_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a run's audit report: one self-contained HTML file")
    add_finished_run_args(p)
    p.add_argument("--index", default=None, help="gallery index folder for the retrieval audits")
    p.add_argument("--prompt", action="append", default=[], help="audit prompt (repeatable)")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.set_defaults(func=cmd_report)


def retrieval_left_out(index: str | None, prompts: list[str]) -> str:
    """Why a report holds no retrieval audit and how to add one; empty when it holds one."""
    if index and prompts:
        return ""
    missing = [name for name, given in (("--index (a gallery index)", index), ("--prompt", prompts)) if not given]
    return (f"Retrieval left out: no {' and no '.join(missing)} given, so this report holds no prompt's top-k "
            "before / after. Add --index INDEX --prompt \"a photo of ...\" (repeatable) to audit what the model "
            "still finds among the gallery's held-out photos.")


def cmd_report(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.prompt and not args.index:
        # a prompt is never dropped silently: its top-k needs a gallery of held-out photos
        asked = ", ".join(f'"{p}"' for p in args.prompt)
        raise ValueError(f"--prompt needs --index: no report written, the prompts {asked} would have had no "
                         "retrieval audit. Add --index INDEX, the gallery index whose held-out photos their top-k "
                         "are drawn from (python -m index_builder build); without prompts the report holds the "
                         "curves, the metrics and the run's stress test")
    run = RunFolder(args.run)
    run.require_done()
    alpha = run.chosen_alpha if args.alpha is None else float(args.alpha)
    spec = RunSpec.read(run.path)
    prompts = []
    if args.index and args.prompt:
        gallery = load_index(args.index)
        device = resolve_device(args.device)
        original = run.original_model(device)
        after = embeddings_at(original, run.unlearned_state(device), gallery, alpha, run.grid_dir(gallery.name))
        before = np.asarray(gallery.embeddings, dtype=np.float32)
        trained, forgotten = run_gallery_masks(run, gallery.paths, gallery.labels)
        for prompt in args.prompt:
            query = encode_text(original, [prompt])[0].cpu().numpy().astype(np.float32)
            prompts.append(held_out_audit(prompt, query, before, after, args.k, gallery.labels, gallery.paths,
                                          trained, forgotten, gallery.name))
    note = retrieval_left_out(args.index, args.prompt)
    if note:
        print(f"note: {note}", file=sys.stderr)
    inputs = ReportInputs(alpha, prompts, title=spec.title if spec else run.name,
                          model_label=str(spec.source.get("model", spec.model)) if spec else "",
                          profile=spec.profile if spec else "", described=(spec.source or {}).get("described", {})
                          if spec else {}, command=spec.reproduce_command() if spec else "", retrieval_note=note)
    out = write_report(run, inputs, Path(args.out))
    for result in prompts:
        b, a = result.forgotten_counts
        fall = result.fall()
        print(f'"{result.prompt}": forgotten subgroup in the held-out top-{args.k}: {b} -> {a}'
              + (f" (fall {100 * fall:.0f} %)" if fall is not None else ""))
    print(f"{out}: {out.stat().st_size / 1e3:.0f} KB in {time.perf_counter() - started:.1f} s")
    return 0
