"""A run profile end to end on the default gallery, through the HTTP API: start a preset (default: the app's default,
"monkey without marmoset"), follow it to the end, open the run (first retrieval on screen).

    nice -n 10 .venv/bin/python benchmarks/bench_app_quick.py [--profile quick|fast] [--preset NAME] [--runs 2]

The app starts with its warm-up (as ``app.py`` does; ``--no-warm-up`` to leave it out): its worker builds the gallery
index and prepares the default preset's data and class texts; the bench waits for that, then loads the index (built
once per model and cache) and reports both apart. Each run is then timed from the click to the finished run and to
the opened run, with the alpha grid's own timing and its size on disk. A run is done once its grid holds the
calibrated alpha; the bench then waits until the worker has filled the other alphas (reported as "all ... after the
click") before the next click.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import launch, run_preset, timed

from clipforget.app.config import EXAMPLE_PROMPTS, AppConfig
from clipforget.app.presets import PRESETS, get_preset
from clipforget.app.service import AppServices
from clipforget.app.workspaces import folder_bytes
from clipforget.models.factory import DEFAULT_MODEL


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=None, help="cache with indexes/runs (default: a fresh temp folder)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--port", type=int, default=7862)
    p.add_argument("--profile", default="quick", help="quick | fast (the app's default) | full")
    p.add_argument("--preset", default=next(iter(PRESETS)), help="app preset (default: the app's first)")
    p.add_argument("--choice", default=None, help="the preset's option (default: its default)")
    p.add_argument("--prompt", default=EXAMPLE_PROMPTS[1])
    p.add_argument("--no-warm-up", action="store_true", help="start without the app's warm-up (as app.py --no-warm-up)")
    args = p.parse_args(argv)
    from gradio_client import Client

    cache = args.cache_dir or tempfile.mkdtemp(prefix="bench_quick_")
    os.environ["CLIPFORGET_CACHE"] = cache  # decoded datasets and class texts too, as app.py --cache-dir does
    services = AppServices.create(AppConfig(model=args.model, cache_dir=cache, warm_up=not args.no_warm_up))
    demo = launch(services, args.profile, args.port)
    gallery = services.config.default_gallery
    rows = []
    try:
        t0 = time.perf_counter()
        warm = Path(cache) / "queue" / "warm-up.done.json"
        while not args.no_warm_up and not warm.is_file():  # the worker prepares the default preset's first run
            time.sleep(0.5)
        warm_s = time.perf_counter() - t0
        size = len(services.galleries.get(args.model, gallery))
        index_s = time.perf_counter() - t0
        client = Client(demo.local_url, verbose=False, download_files=False)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            choice = args.choice or get_preset(args.preset).default_choice()
            run_preset(client, args.preset, choice, args.model, args.profile)
            run_s = time.perf_counter() - t0
            run_id = client.predict(api_name="/list_runs")["value"]
            opened, open_s = timed(client.predict, run_id, args.prompt, gallery, api_name="/open_run")
            folder = services.runs.runs_dir / run_id
            info_path = next((folder / "alpha_grid").glob("*/grid.json"))
            ready_at_done = len(json.loads(info_path.read_text()).get("ready", [None] * 10**6))
            while "ready" in (grid_info := json.loads(info_path.read_text())):  # the worker fills the rest
                time.sleep(0.5)
            full_s = time.perf_counter() - t0
            rows.append({"run_s": run_s, "open_s": open_s, "total_s": run_s + open_s, "full_s": full_s,
                         "ready_at_done": min(ready_at_done, len(grid_info["alphas"])),
                         "grid_s": grid_info["seconds"]["total"], "grid_rows": grid_info["count"],
                         "activations": grid_info.get("activations", "decoded"),
                         "alphas": len(grid_info["alphas"]), "run_mb": folder_bytes(folder) / 1e6,
                         "grid_mb": folder_bytes(folder / "alpha_grid") / 1e6, "shown": len(opened[-1])})
    finally:
        demo.close()
        services.close()
    print(f"model {args.model}, preset {args.preset}, profile {args.profile}, gallery {gallery} ({size} images); "
          f"index build or load {index_s:.1f} s (once per model)" + ("" if args.no_warm_up else
          f", after the app's warm-up ({warm_s:.1f} s: {json.loads(warm.read_text())['seconds']})"))
    for i, r in enumerate(rows, 1):
        print(f"run {i}: click -> done {r['run_s']:.1f} s, open -> first retrieval {r['open_s']:.1f} s, "
              f"end to end {r['total_s']:.1f} s; alpha grid {r['grid_rows']} images x {r['alphas']} alphas "
              f"({r['ready_at_done']} ready at done, all {r['full_s']:.1f} s after the click; gallery activations "
              f"{r['activations']}) {r['grid_s']:.1f} s, {r['grid_mb']:.1f} MB (run folder {r['run_mb']:.1f} MB); "
              f"{r['shown']} results shown")


if __name__ == "__main__":
    main()
