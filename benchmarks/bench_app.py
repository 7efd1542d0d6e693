"""Web app: latency from moving the alpha slider to the updated page content, through gradio_client.

One request = what the slider's ``change`` event sends: alpha, prompt, gallery -> plotly figure, metrics table with the
Score, retrieval before/after galleries (top-k thumbnails with left/entered marks). Measured on the default gallery
(CIFAR-10 test + the ImageNet samples, ~11k images) with the embedded model, on a finished run:

    nice -n 10 .venv/bin/python benchmarks/bench_app.py [--cache-dir DIR] [--requests 200]

Set-up (index build, the run itself, the run's alpha grid) is timed once and reported separately; the latency is
measured over ``--requests`` slider moves to random grid alphas (client -> server -> client, images not downloaded:
the browser fetches thumbnails in parallel after the response). Prints p50 / p95 / mean and a server-side breakdown.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

from common import finished_runs, launch, ms, percentile, run_preset, set_owner, timed

from clipforget.app.config import AppConfig
from clipforget.app.identity import COOKIE
from clipforget.app.service import AppServices
from clipforget.models.factory import DEFAULT_MODEL


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=None, help="cache with indexes/runs (default: a fresh temp folder)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--profile", default="quick", help="run profile of the run that is explored")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--prompt", default="airplane")
    p.add_argument("--port", type=int, default=7861)
    p.add_argument("--reuse", action="store_true",
                   help="explore the newest finished run in --cache-dir instead of running a new one")
    args = p.parse_args(argv)

    from gradio_client import Client

    cache = args.cache_dir or tempfile.mkdtemp(prefix="bench_app_")
    service = AppServices.create(AppConfig(model=args.model, cache_dir=cache))
    demo = launch(service, args.profile, args.port)
    setup: dict[str, float] = {}
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        gallery = service.config.default_gallery
        setup["index_build_or_load_s"] = timed(service.galleries.get, args.model, gallery)[1]

        done = finished_runs(cache)
        if args.reuse and done:  # hand the run to this client's workspace (named by its signed cookie)
            set_owner(done[-1], service.tokens.verify(client.cookies[COOKIE]))
        else:
            setup["run_s"] = timed(run_preset, client, "cifar10-class", "airplane", args.model, args.profile)[1]
        run_id = client.predict(api_name="/list_runs")["value"]

        setup["open_run_s"] = timed(client.predict, run_id, args.prompt, gallery, api_name="/open_run")[1]

        alphas = [round(i * 0.05, 2) for i in range(21)]
        rng = random.Random(0)
        for a in alphas[:5]:  # warm-up
            client.predict(a, args.prompt, gallery, api_name="/set_alpha")
        latencies = []
        for _ in range(args.requests):
            out, seconds = timed(client.predict, rng.choice(alphas), args.prompt, gallery, api_name="/set_alpha")
            latencies.append(1000 * seconds)
            assert len(out) == 6 and out[-1], "empty retrieval result"

        # the same round trip for a trivial event (a cached model check): Gradio + client overhead
        floor = [ms(client.predict, args.model, api_name="/check_model") for _ in range(50)]

        # server side only (no HTTP / queue): the same work set_alpha does
        owner = json.loads((service.runs.runs_dir / run_id / "job.json").read_text())["owner"]
        view = service.runs.open(owner, run_id)
        parts: dict[str, list[float]] = {"figure": [], "metrics": [], "retrieve": [], "thumbnails": []}
        for _ in range(50):
            a = rng.choice(alphas)
            parts["figure"].append(ms(view.figure_json, a))
            parts["metrics"].append(ms(view.metrics_table, a))
            res, seconds = timed(view.retrieve, args.prompt, a, gallery)
            parts["retrieve"].append(1000 * seconds)
            t0 = time.perf_counter()
            for h in res["before"] + res["after"]:
                service.galleries.thumbnail(h["path"])
            parts["thumbnails"].append(1000 * (time.perf_counter() - t0))
        n_gallery = len(service.galleries.get(args.model, gallery))
    finally:
        demo.close()

    print(f"gallery: {gallery}, {n_gallery} images; model {args.model}; run profile {args.profile}; "
          f"top-k {service.config.top_k}; requests {len(latencies)}")
    print("set-up: " + ", ".join(f"{k} {v:.1f}" for k, v in setup.items()))
    print(f"alpha -> updated page (gradio_client round trip): p50 {percentile(latencies, 50):.1f} ms, "
          f"p95 {percentile(latencies, 95):.1f} ms, mean {statistics.mean(latencies):.1f} ms, "
          f"max {max(latencies):.1f} ms")
    print(f"trivial event round trip (floor): p50 {percentile(floor, 50):.1f} ms, p95 {percentile(floor, 95):.1f} ms")
    print("server-side parts (median ms): " + ", ".join(
        f"{k} {statistics.median(v):.2f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
