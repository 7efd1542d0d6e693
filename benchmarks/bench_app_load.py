"""Web app under load: N concurrent clients, each in its own workspace with its own finished run, moving the alpha
slider, typing prompts and reloading the page for a fixed time against one server (``python app.py`` in a subprocess).

    nice -n 10 .venv/bin/python benchmarks/bench_app_load.py --clients 20 --seconds 60 [--cache-dir DIR]

Set-up: one quick run of the CIFAR-10 preset on the default gallery (or the newest finished run in ``--cache-dir``
with ``--reuse``), copied into every client's workspace (hard links; the owner in ``job.json`` rewritten). Each
client gets a token from ``/new_api_token`` (the benchmark reads the token's workspace with the server's key), opens
its run once, then loops: ``/set_alpha`` to a random grid alpha or ``/retrieve`` with a random prompt (40 % each) or
loads the page (``/`` and ``/config``, 20 %).

The load runs in **one separate process**: an asyncio client speaking the protocol the browser speaks -- ``POST
/gradio_api/queue/join``, then the session's event stream ``GET /gradio_api/queue/data`` until the event's
``process_completed`` -- with its own session hash and the workspace token, about 6 ms of CPU per call
(``gradio_client`` costs about 55 ms, which on a 2-core machine competes with the server for the cores: D12).
Prints per-endpoint and overall p50 / p95 / p99 / max latency (client -> server -> client, thumbnails not
downloaded), throughput, errors, and the server's resident memory before the clients open their runs, once every
run is open, and after the load (the growth the issue bounds is the last two).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import finished_runs, percentile, rss_mb, run_preset, serve_app

from clipforget.app.identity import HEADER, WorkspaceTokens
from clipforget.models.factory import DEFAULT_MODEL

PROMPTS = ["airplane", "monkey", "marmoset", "cat", "ship", "truck", "a photo of a dog", "bird", "horse", "frog"]


def give_run(cache: Path, source: Path, owner: str) -> str:
    """A copy of run ``source`` owned by ``owner`` (files hard-linked, job.json rewritten)."""
    run_id = f"{source.name[:-8]}{os.urandom(4).hex()}"
    target = cache / "runs" / run_id
    shutil.copytree(source, target, copy_function=os.link)
    spec = json.loads((source / "job.json").read_text())
    (target / "job.json").unlink()
    (target / "job.json").write_text(json.dumps({**spec, "run_id": run_id, "owner": owner}))
    return run_id


class RequestMix:
    """One client's random sequence of requests: 20 % page loads, 40 % alpha moves, 40 % searches (a new prompt)."""

    def __init__(self, seed: int, alphas: list[float]):
        self.rng, self.alphas, self.prompt = random.Random(seed), alphas, "airplane"

    def next(self) -> tuple[str, float, str]:
        """``(endpoint, alpha, prompt)`` of the next request."""
        draw = self.rng.random()
        endpoint = "page" if draw < 0.2 else "set_alpha" if draw < 0.6 else "retrieve"
        if endpoint == "retrieve":
            self.prompt = self.rng.choice(PROMPTS)
        return endpoint, self.rng.choice(self.alphas), self.prompt


def answered(out) -> bool:
    """An explore event's output holds its six components and a non-empty theta(alpha) gallery."""
    return len(out) == 6 and len(out[5]) > 0


def record(results: dict[str, list[float]], errors: list[str], endpoint: str, ok: bool, out, ms: float) -> None:
    if ok:
        results[endpoint].append(ms)
    else:
        errors.append(f"{endpoint}: {str(out)[:200]}")


class QueueClient:
    """One browser-like client: its workspace token, its own session hash, one event at a time."""

    def __init__(self, http: httpx.AsyncClient, token: str, fn_index: dict[str, int]):
        self.http, self.fn_index = http, fn_index
        self.headers = {HEADER: token}
        self.session = os.urandom(8).hex()

    async def call(self, api_name: str, data: list) -> list:
        """Join the queue and read the session's stream until this event completes; its output data."""
        join = await self.http.post("/gradio_api/queue/join", headers=self.headers, json={
            "data": data, "event_data": None, "fn_index": self.fn_index[api_name], "trigger_id": None,
            "session_hash": self.session})
        join.raise_for_status()
        event_id = join.json()["event_id"]
        async with self.http.stream("GET", "/gradio_api/queue/data", headers=self.headers,
                                    params={"session_hash": self.session}) as stream:
            stream.raise_for_status()
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                    if not message.get("success"):
                        raise RuntimeError(str(message.get("output"))[:200])
                    return message["output"]["data"]
        raise RuntimeError("the event stream ended before the event completed")

    async def page(self) -> bool:
        pages = [await self.http.get(path, headers=self.headers) for path in ("/", "/config")]
        return [r.status_code for r in pages] == [200, 200]


async def run_raw_clients(jobs: list[tuple], opened: threading.Event) -> dict:
    """Every client as a task of one event loop (see the module docstring)."""
    url, seconds = jobs[0][1], jobs[0][-1]
    results: dict[str, list[float]] = {"set_alpha": [], "retrieve": [], "page": []}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=4 * len(jobs), max_keepalive_connections=4 * len(jobs))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        config = (await http.get("/config", headers={HEADER: jobs[0][2]})).json()
        fn_index = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        clients = [QueueClient(http, token, fn_index) for _, _, token, *_ in jobs]
        t0 = time.perf_counter()
        await asyncio.gather(*(c.call("open_run", [run_id, "airplane", gallery, ""])
                               for c, (_, _, _, run_id, gallery, *_) in zip(clients, jobs, strict=True)))
        open_s = time.perf_counter() - t0
        opened.set()
        stop_at = time.time() + seconds

        async def worker(i: int, c: QueueClient, run_id: str, gallery: str, alphas: list[float]) -> None:
            mix = RequestMix(i, alphas)
            while time.time() < stop_at:
                endpoint, a, prompt = mix.next()
                t = time.perf_counter()
                try:
                    if endpoint == "page":
                        ok, out = await c.page(), "page"
                    else:
                        out = await c.call(endpoint, [a, run_id, prompt, gallery])
                        ok = answered(out)
                except Exception as err:  # counted, not raised: the load goes on
                    ok, out = False, repr(err)
                record(results, errors, endpoint, ok, out, 1000 * (time.perf_counter() - t))

        await asyncio.gather(*(worker(i, c, run_id, gallery, alphas)
                               for c, (i, _, _, run_id, gallery, alphas, _) in zip(clients, jobs, strict=True)))
    return {"results": results, "errors": errors, "open_s": open_s}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--cache-dir", default=None, help="cache with indexes/runs (default: a fresh temp folder)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--port", type=int, default=7871)
    p.add_argument("--reuse", action="store_true", help="copy the newest finished run of --cache-dir")
    args = p.parse_args(argv)
    from gradio_client import Client

    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="bench_load_"))
    cache.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    server = serve_app(["--cache-dir", str(cache), "--model", args.model, "--profile", "quick"], args.port,
                       cache / f"bench-load-{args.port}.log")
    try:
        keys = WorkspaceTokens.from_file(cache / "workspace.key")
        gallery = "cifar10-test+imagenet"
        tokens = [Client(url, verbose=False, download_files=False).predict(api_name="/new_api_token")
                  for _ in range(args.clients)]  # what a script does
        owners = [keys.verify(t, "api") for t in tokens]
        done = finished_runs(cache)
        t0 = time.perf_counter()
        if args.reuse and done:
            source = done[-1]
        else:
            first = Client(url, verbose=False, download_files=False, headers={HEADER: tokens[0]})
            run_preset(first, "cifar10-class", "airplane", args.model, "quick")
            source = max((cache / "runs").iterdir(), key=lambda r: r.stat().st_mtime)
        setup_run = time.perf_counter() - t0
        run_ids = [give_run(cache, source, owner) for owner in owners]
        grid = json.loads(next((source / "alpha_grid").glob("*/grid.json")).read_text())
        alphas = [float(a) for a in grid["alphas"]]
        rss_start = rss_mb(server.pid)
        jobs = [(i, url, tokens[i], run_ids[i], gallery, alphas, args.seconds) for i in range(args.clients)]
        rss_open: list[float] = []
        t0 = time.perf_counter()
        opened = threading.Event()
        watcher = threading.Thread(target=lambda: opened.wait() and rss_open.append(rss_mb(server.pid)), daemon=True)
        watcher.start()
        outcome = asyncio.run(run_raw_clients(jobs, opened))
        opened.set()
        watcher.join()
        setup_open = outcome["open_s"]
        wall = time.perf_counter() - t0 - setup_open
        results, errors = outcome["results"], outcome["errors"]
        rss_after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)

    every = results["set_alpha"] + results["retrieve"] + results["page"]
    print(f"{args.clients} clients x {args.seconds:g} s against one server (model {args.model}, quick run on "
          f"{gallery}, {grid['count']} grid images x {len(alphas)} alphas, each client its own workspace and run; "
          "raw queue-protocol clients)")
    print(f"set-up: run {setup_run:.1f} s, {args.clients} x open_run {setup_open:.1f} s")
    for name, values in (*results.items(), ("all", every)):
        if values:
            print(f"{name:9s}: n {len(values):5d}  p50 {percentile(values, 50):7.1f} ms  "
                  f"p95 {percentile(values, 95):7.1f} ms  p99 {percentile(values, 99):7.1f} ms  "
                  f"max {max(values):7.1f} ms  mean {statistics.mean(values):7.1f} ms")
    print(f"throughput {len(every) / wall:.1f} requests/s; errors {len(errors)}")
    for e in errors[:5]:
        print("  error:", e)
    opened_mb = f"{rss_open[0]:.0f} MB once every run was open, " if rss_open else ""
    print(f"server RSS {rss_start:.0f} MB before the clients opened their runs, {opened_mb}{rss_after:.0f} MB after "
          f"the load" + (f" (growth under load {rss_after - rss_open[0]:+.0f} MB)" if rss_open else ""))


if __name__ == "__main__":
    main()
