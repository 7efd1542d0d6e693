"""App responsiveness while a run trains: the α slider and retrieval, idle vs. with a run training in (a) a thread
of the web process (the ``thread`` backend) and (b) a worker process (``local``).

    nice -n 10 .venv/bin/python benchmarks/bench_backends.py --cache-dir .cache/bench_backends [--requests 150]

Set-up (once per cache folder): the default gallery's index (CIFAR-10 test + the ImageNet samples, ~11k images)
and one finished quick run with its alpha grid, to explore. Then for each backend, in the web app's process:

* *slider_http*: an α-slider event through the Gradio server (``/set_alpha``: figure, metrics table with the
  Score, retrieval before/after with thumbnails) -- what a browser waits for;
* *retrieval_http*: a new prompt at a fixed α (``/retrieve``: text encoding, exact search, thumbnails);
* *retrieval_server*: the same retrieval computed directly in the server process (no HTTP);
* *trivial_http*: the round trip of a trivial event (the web stack's floor),

measured idle, then while a run of the app's default profile (``fast``, CIFAR-10 airplane) trains (forget / remind
stages), then idle again; the run is cancelled afterwards. Prints p50 / p95 per phase and the ratio of the busy p95
to the p95 of both idle phases together (goal: within 1.5x of idle). ``--json`` writes everything. The HTTP events
use the UI's API names (``ui.py``); the explored run is handed to the client's workspace for the measurement.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import time
from pathlib import Path

from common import launch, ms, percentile, set_owner

from clipforget.app.config import AppConfig
from clipforget.app.identity import COOKIE
from clipforget.app.service import AppServices
from clipforget.models.factory import DEFAULT_MODEL

OWNER = "benchbackends0000"
PROMPTS = ("airplane", "a photo of an airplane", "jet", "cat", "ship on the sea", "truck", "a red car", "dog", "bird",
           "horse", "frog", "deer", "a small boat", "an airliner in the sky", "a kitten", "a pickup truck")


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2),
            "mean": round(statistics.mean(values), 2), "max": round(max(values), 2)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def finished_run(cache: str, model: str) -> str:
    """The id of a finished quick run with the default gallery's grid (made once, in-process)."""
    service = AppServices.create(AppConfig(model=model, cache_dir=cache, backend="thread"))
    for run in service.runs.list_runs(OWNER):
        if run["state"] == "done":
            return run["id"]
    t0 = time.perf_counter()
    started = service.runs.start_preset(OWNER, "cifar10-class", "airplane", model, profile="quick")
    job = service.runs.backend.wait(started["id"], timeout=3600)
    if job["state"] != "done":
        raise SystemExit(f"set-up run failed: {job.get('error')}")
    print(f"set-up: index + quick run + alpha grid in {time.perf_counter() - t0:.0f} s", flush=True)
    return started["id"]


def measure(service: AppServices, run_id: str, requests: int, client, until=None) -> dict[str, list[float]]:
    """``requests`` rounds, interleaved (ms): an α-slider event and a new-prompt retrieval through the Gradio
    server (``/set_alpha``, ``/retrieve``: what a browser waits for), the same retrieval computed in the server
    process (text encoding + exact search + before/after) and a trivial event (``/check_model``: the web stack's
    floor). Stops early when ``until()``."""
    owner = json.loads((service.runs.runs_dir / run_id / "job.json").read_text())["owner"]
    view = service.runs.open(owner, run_id)
    gallery = service.config.default_gallery
    alphas = [round(i * 0.05, 2) for i in range(21)]
    rng = random.Random(0)
    out: dict[str, list[float]] = {"slider_http": [], "retrieval_http": [], "retrieval_server": [], "trivial_http": []}
    for i in range(requests):
        if until is not None and until():
            break
        a = rng.choice(alphas)
        prompt = f"{rng.choice(PROMPTS)} {i}"  # a new prompt: its text embedding is not cached
        out["retrieval_server"].append(ms(view.retrieve, prompt + " s", 0.5, gallery))
        if client is not None:
            out["slider_http"].append(ms(client.predict, a, "airplane", gallery, api_name="/set_alpha"))
            out["retrieval_http"].append(ms(client.predict, 0.5, prompt, gallery, api_name="/retrieve"))
            out["trivial_http"].append(ms(client.predict, service.config.model, api_name="/check_model"))
        time.sleep(0.02)  # a user moving a slider, not a load test
    return out


def bench_backend(name: str, cache: str, model: str, run_id: str, requests: int, use_http: bool) -> dict:
    config = AppConfig(model=model, cache_dir=cache, backend=name, workers=1 if name == "local" else None)
    service = AppServices.create(config)
    demo = client = None
    run_dir = service.runs.runs_dir / run_id
    if use_http:
        from gradio_client import Client

        demo = launch(service, "quick", free_port())
        client = Client(demo.local_url, verbose=False, download_files=False)
        set_owner(run_dir, service.tokens.verify(client.cookies[COOKIE]))  # to this client's workspace (its cookie)
        client.predict(run_id, "airplane", service.config.default_gallery, api_name="/open_run")
    result: dict = {"backend": name}
    try:
        measure(service, run_id, 25, client)  # warm-up: grid points, thumbnails, text tower
        result["idle"] = measure(service, run_id, requests, client)
        started = service.runs.start_preset(OWNER, "cifar10-class", "airplane", model, profile="fast")
        rid = started["id"]

        def training() -> bool:
            snap = service.runs.snapshot(OWNER, rid) or {}
            return snap.get("state") == "running" and str(snap.get("message", "")).startswith(("forget", "remind"))

        t0 = time.time()
        while not training():
            if time.time() - t0 > 1800:
                raise SystemExit(f"{name}: the run never started training: {service.runs.snapshot(OWNER, rid)}")
            time.sleep(0.5)
        result["busy"] = measure(service, run_id, requests, client, until=lambda: not training())
        snap = service.runs.snapshot(OWNER, rid) or {}
        result["busy_run"] = {k: snap.get(k) for k in ("backend", "device", "worker", "message")}
        service.runs.cancel(OWNER, rid)
        service.runs.backend.wait(rid, timeout=1800)
        result["idle_after"] = measure(service, run_id, requests, client)
    finally:
        set_owner(run_dir, OWNER)
        if demo is not None:
            demo.close()
        service.runs.backend.close()
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=".cache/bench_backends")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--requests", type=int, default=150)
    p.add_argument("--backends", default="thread,local")
    p.add_argument("--no-http", action="store_true", help="skip the Gradio round trips")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    cache = str(Path(args.cache_dir).resolve())
    run_id = finished_run(cache, args.model)
    results = [bench_backend(b, cache, args.model, run_id, args.requests, not args.no_http)
               for b in args.backends.split(",")]
    report = []
    kinds = ("slider_http", "retrieval_http", "retrieval_server", "trivial_http")
    for r in results:
        row = {"backend": r["backend"], "run": r.get("busy_run")}
        for phase in ("idle", "busy", "idle_after"):
            row[phase] = {k: summary(v) for k, v in r[phase].items() if v}
        row["idle_pooled"] = {k: summary(r["idle"][k] + r["idle_after"][k]) for k in kinds if r["idle"].get(k)}
        row["ratio_p95_busy_idle"] = {k: round(row["busy"][k]["p95"] / row["idle_pooled"][k]["p95"], 2)
                                      for k in row["busy"] if k in row["idle_pooled"]}
        report.append(row)
        print(f"\n== backend {r['backend']} (the training run: {r.get('busy_run', {}).get('worker')})")
        print(f"{'':17} {'phase':11} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for kind in kinds:
            for phase in ("idle", "busy", "idle_after", "idle_pooled"):
                s = row[phase].get(kind)
                if s:
                    print(f"{kind:17} {phase:11} {s['n']:4d} {s['p50']:8.1f} {s['p95']:8.1f} {s['max']:8.1f}")
        print("p95 busy / idle (pooled): " + ", ".join(f"{k} {v:.2f}x" for k, v in row["ratio_p95_busy_idle"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
