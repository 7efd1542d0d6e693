"""Issue 20, the auditor's loop, measured through the app's services: "marmoset" top-40 of the `demo` gallery as the
forget set, "monkey" top-200 minus those as the retain set, label "monkey", one run of a profile; then the held-out
audit of "a photo of a marmoset" (marmosets in the top-20 before / after at alpha*), the report (size, seconds to
write) and the compare view with three runs (the measured run and two `quick` runs of the same selection).

    nice -n 10 .venv/bin/python benchmarks/bench_auditor_loop.py --profile fast --threads 1 [--cache-dir DIR]
    nice -n 10 .venv/bin/python benchmarks/bench_auditor_loop.py --cache-dir DIR --reuse   # the runs DIR holds

The compare view is timed as a user meets it: each run opened first (as **Open** does: its retrieval for "monkey"),
then the first comparison for a new prompt ("marmoset") and three more.

Prints one JSON object (the auditor's loop in BENCHMARKS.md "The app") and writes the report next to it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import timed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=None, help="cache with indexes/runs (default: a fresh temp folder)")
    p.add_argument("--profile", default="fast")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="where to copy the report (default: beside the cache)")
    p.add_argument("--compare-runs", type=int, default=3, help="runs in the compare view (extra ones: quick)")
    p.add_argument("--reuse", action="store_true", help="measure the finished runs the cache holds (no training)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from clipforget.app import compare
    from clipforget.app.config import AppConfig
    from clipforget.app.selection import SelectionRequest
    from clipforget.app.service import AppServices

    cache = args.cache_dir or tempfile.mkdtemp(prefix="bench_loop_")
    services = AppServices.create(AppConfig(cache_dir=cache, backend="thread"))
    owner = services.workspaces.new_id()
    reused = sorted(((spec.created, spec.run_id, spec.owner, spec.profile) for spec, _ in services.runs.all_runs()))
    if args.reuse:
        if not reused:
            raise SystemExit(f"no runs to reuse in {cache}")
        owner = reused[0][2]
    asked = SelectionRequest("demo", "marmoset", 40, [], "monkey", 200, [])
    out: dict = {"profile": args.profile, "threads": args.threads}
    gallery, seconds = timed(services.galleries.get, services.config.model, "demo")
    out["index_s"] = round(seconds, 1)
    out["gallery_images"] = len(gallery)

    def run(profile: str) -> str:
        started = time.perf_counter()
        snap = services.runs.start_selection(owner, asked, "monkey", "monkey", profile=profile)
        job = services.runs.backend.wait(snap["id"], timeout=3600)
        if job["state"] != "done":
            raise SystemExit(f"run {snap['id']}: {job['state']} {job.get('error')}")
        out.setdefault("run_s", {})[snap["id"]] = round(time.perf_counter() - started, 1)
        return snap["id"]

    run_id = reused[0][1] if args.reuse else run(args.profile)
    view = services.runs.open(owner, run_id)
    alpha = view.chosen_alpha
    found = view.retrieve("a photo of a marmoset", alpha, "demo", 20, held_out_only=True)
    marmosets = [sum("marmoset" in h["label"] for h in found[side]) for side in ("before", "after")]
    out.update({"run": run_id, "alpha": alpha, "score": view.metrics.get("score"),
                "trained_images_left_out": found["trained_in_gallery"],
                "marmosets_top20_heldout": marmosets,
                "fall": round(1 - marmosets[1] / marmosets[0], 3) if marmosets[0] else None,
                "forgotten_as": view.folder.forgotten_names(),
                "metrics_table": view.metrics_table(alpha)[1]})
    report, seconds = timed(services.report, owner, run_id, alpha, "a photo of a marmoset", "demo")
    out["report_s"] = round(seconds, 2)
    out["report_kb"] = round(report.stat().st_size / 1e3)
    target = Path(args.out) if args.out else Path(cache) / report.name
    target.write_bytes(report.read_bytes())
    out["report_file"] = str(target)
    extra = max(args.compare_runs - 1, 0)
    ids = [run_id] + ([r[1] for r in reused[1:extra + 1]] if args.reuse else [run("quick") for _ in range(extra)])
    views = [services.runs.open(owner, r) for r in ids]
    for v in views:
        v.retrieve("monkey", v.chosen_alpha, "demo")  # what Open shows first
    # the first one fills the views' caches (prompt similarities)
    timings = [round(timed(compare.compare_runs, views, "marmoset", "demo")[1], 3) for _ in range(4)]
    out["compare_runs"] = len(views)
    out["compare_s"] = {"first": timings[0], "again": timings[1:]}
    services.close()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
