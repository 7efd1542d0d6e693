"""Issue 39's attack cases under load, against the app in this process on a fresh cache (the fast ones are tests:
tests/test_app_hostile.py; the figures: docs/security.md, "Issue 39 measured").

    nice -n 5 .venv/bin/python benchmarks/bench_security.py [--exports 20] [--sweep 855] [--gallery NAME]

The cases (``--cases``), in order:

1. **warm-up** -- once the fresh app's warm-up is inside its gallery index build, a quick CIFAR-10 run is queued:
   seconds from the click until a worker runs it, and what the queue said meanwhile;
2. **exports** -- ``--exports`` clients of one workspace export the finished run at one alpha at the same moment:
   links, distinct files, identical downloads, valid zips (``testzip``), zips with a temporary member;
3. **origin** -- a page of ``http://127.0.0.1:9999`` with the user's cookie: allow-origin headers answered, calls that
   got through (run list, cancel, delete, export, upload, preflight), runs changed;
4. **sweep** -- ``--sweep`` calls with bad arguments spread over every API endpoint and the page's own events:
   error replies, tracebacks printed by the server (stderr, log records with an exception) -- the target is 0.

The default gallery ``bench`` (1,431 images of the data root) keeps the whole bench to minutes on 2 loaded CPU cores;
``--gallery demo`` is the app's default (21,531 images). Prints one JSON object at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import launch
from gradio_client import Client

from clipforget.app.config import AppConfig
from clipforget.app.identity import COOKIE, HEADER
from clipforget.app.presets import get_preset
from clipforget.app.service import AppServices
from clipforget.core.paths import data_root
from clipforget.models.factory import DEFAULT_MODEL

FOREIGN = "http://127.0.0.1:9999"


class Tracebacks(logging.Handler):
    """Counts log records that carry an exception (a traceback in the log)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0
        self.refused = 0  # the one line per refused call (clipforget.app.ui.gradio_guard)
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1
            self.samples.append(record.getMessage()[:200])
        elif record.getMessage().startswith("refused arguments of"):
            self.refused += 1


def bench_warm_up(services: AppServices, url: str, cache: Path, preset: str, timeout: float,
                  queue_after: float) -> dict:
    t0 = time.perf_counter()
    activity = ""
    # until the worker says it is inside the index build (at most queue_after s: a worker that says nothing)
    while not activity and time.perf_counter() - t0 < queue_after:
        for beat in (cache / "queue").rglob("worker.json"):
            try:
                act = json.loads(beat.read_text()).get("activity") or {}
            except (OSError, ValueError):
                continue
            if act.get("step") == "gallery_index" and " / " in act.get("message", ""):
                activity = act["message"]
        time.sleep(0.2)
    into_build = time.perf_counter() - t0
    client = Client(url, verbose=False, download_files=False)
    clicked = time.perf_counter()
    client.predict(preset, get_preset(preset).default_choice(), DEFAULT_MODEL, "quick", api_name="/start_preset")
    owner = services.tokens.verify(client.cookies.get(COOKIE), "browser") or ""
    active = services.runs.backend.active(owner)
    run_id = active[-1]["id"] if active else ""
    messages: list[str] = []
    started = None
    while run_id and time.perf_counter() - clicked < timeout:
        snap = services.runs.backend.snapshot(run_id) or {}
        if snap.get("state") == "queued":
            if not messages or messages[-1] != snap.get("message", ""):
                messages.append(snap.get("message", ""))
        elif snap.get("state") is not None:
            started = time.perf_counter() - clicked
            break
        time.sleep(0.1)
    final = client.predict(api_name="/watch_start_preset")
    return {"warm_up_in_index_build_after_s": round(into_build, 1), "activity_seen": activity,
            "queued_run_started_after_s": None if started is None else round(started, 2),
            "queue_messages": messages[:5], "run_done": "done" in final, "run_id": run_id, "owner": owner}


def bench_exports(url: str, token: str, run_id: str, gallery: str, n: int, alpha: float) -> dict:
    headers = {HEADER: token}
    clients = [Client(url, verbose=False, download_files=False, headers=headers) for _ in range(n)]
    barrier = threading.Barrier(n)

    def export(c) -> tuple[str, bytes | str]:
        barrier.wait()
        try:
            link = c.predict(alpha, api_name="/export")
        except Exception as err:  # counted: a failed export is what the issue found
            return "error", str(err)[:200]
        href = re.search(r'href="(clipforget/download/[^"]+)"', link or "")
        if not href:
            return "error", (link or "")[:200]
        try:
            return href.group(1), httpx.get(f"{url}/{href.group(1)}", headers=headers, timeout=120).content
        except httpx.HTTPError as err:  # a zip replaced or deleted while it was sent
            return "error", f"download: {err}"[:200]

    for c in clients:  # each session exports the run it opened
        c.predict(run_id, "a photo of a cat", gallery, api_name="/open_run")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(export, clients))
    seconds = time.perf_counter() - t0
    ok = [(href, body) for href, body in results if href != "error"]
    digests = [hashlib.sha256(body).hexdigest() for _, body in ok]
    valid, with_tmp = 0, 0
    for _, body in ok:
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                valid += zf.testzip() is None
                with_tmp += any(m.endswith(".tmp") or "/." in m for m in zf.namelist())
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):  # a corrupt zip: not valid
            pass
    return {"exports_asked": n, "links": len(ok), "errors": [b for h, b in results if h == "error"][:3],
            "distinct_links": len({h for h, _ in ok}), "identical_downloads": max(
                (digests.count(d) for d in set(digests)), default=0),
            "valid_zips": valid, "zips_with_temporary_member": with_tmp, "seconds": round(seconds, 1)}


def bench_origin(url: str, services: AppServices, owner: str) -> dict:
    cookie_jar = {COOKIE: services.tokens.issue(owner, "browser")}
    before = [r["id"] for r in services.runs.list_runs(owner)]
    h = {"Origin": FOREIGN}
    calls = []
    config = httpx.get(f"{url}/config").json()
    fns = {d.get("api_name"): d["id"] for d in config["dependencies"] if d.get("api_name")}
    for method, route, body in (
            ("GET", "/config", None), ("GET", "/gradio_api/info", None),
            ("POST", "/gradio_api/call/list_runs", {"data": []}),
            ("POST", "/gradio_api/queue/join", {"data": [], "fn_index": fns["list_runs"], "session_hash": "evil1"}),
            ("POST", "/gradio_api/queue/join", {"data": [before[0] if before else ""],
                                                 "fn_index": fns["delete_run"], "session_hash": "evil2"}),
            ("POST", "/gradio_api/call/cancel", {"data": [""]}), ("POST", "/gradio_api/call/export", {"data": [0.5]}),
            ("POST", "/gradio_api/upload", None), ("OPTIONS", "/gradio_api/queue/join", None)):
        extra = {"Access-Control-Request-Method": "POST"} if method == "OPTIONS" else {}
        r = httpx.request(method, f"{url}{route}", json=body, cookies=cookie_jar, headers={**h, **extra}, timeout=30)
        calls.append({"call": f"{method} {route}", "status": r.status_code,
                      "allow_origin": r.headers.get("access-control-allow-origin")})
    after = [r["id"] for r in services.runs.list_runs(owner)]
    return {"calls": len(calls), "allow_origin_answers": sum(1 for c in calls if c["allow_origin"]),
            "state_changing_calls_through": sum(1 for c in calls if c["call"].split()[0] != "GET"
                                                and c["status"] < 400),
            "runs_changed": before != after, "detail": calls}


def bad_values(rng: random.Random) -> list:
    return [None, 5, -1, 1e308, "x" * 5000, ["a", ["b"]], {"path": 5}, {"a": {"b": [1, 2]}}, True, "NaN",
            [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}], {"meta": {"_type": "gradio.FileData"}},
            "no-such-choice", [[[[[]]]]], "", rng.random(), {"index": "x", "value": None}, ["tiny"] * 50]


def bench_sweep(url: str, n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    info = httpx.get(f"{url}/gradio_api/info").json()["named_endpoints"]
    endpoints = {name.lstrip("/"): len(spec["parameters"]) for name, spec in info.items()}
    config = httpx.get(f"{url}/config").json()
    private = [d["id"] for d in config["dependencies"] if not d.get("api_name")]
    cookies = httpx.get(url).cookies
    values = bad_values(rng)
    errors = 0
    with httpx.Client(cookies=cookies, timeout=120) as http:
        for i in range(n):
            if private and i % 5 == 4:  # the page's own events (select, pick ...), with malformed event data
                fn = rng.choice(private)
                body = {"data": [rng.choice(values) for _ in range(rng.randint(0, 7))], "fn_index": fn,
                        "session_hash": f"sweep{i}", "event_data": rng.choice([None, "x", {"index": "a"}, [1]]),
                        "trigger_id": rng.choice([None, 1, "x"])}
                r = http.post(f"{url}/gradio_api/queue/join", json=body)
                if r.status_code == 200:
                    with http.stream("GET", f"{url}/gradio_api/queue/data",
                                     params={"session_hash": f"sweep{i}"}) as s:
                        for line in s.iter_lines():
                            if "process_completed" in line:
                                errors += '"success":false' in line.replace(" ", "")
                                break
                else:
                    errors += 1
                continue
            name = rng.choice(sorted(endpoints))
            data = [rng.choice(values) for _ in range(endpoints[name])]
            r = http.post(f"{url}/gradio_api/call/{name}", json={"data": data})
            if r.status_code != 200:
                errors += 1
                continue
            reply = http.get(f"{url}/gradio_api/call/{name}/{r.json()['event_id']}").text
            errors += "event: error" in reply
    return {"calls": n, "error_replies": errors}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=None, help="default: a fresh temp folder (the warm-up case needs one)")
    p.add_argument("--gallery", default="bench", help="the app's default gallery during the bench: a built-in one "
                   "(demo: 21,531 images) or 'bench' (--bench-gallery)")
    p.add_argument("--bench-gallery", default="imagenet-samples:coco-mini/images:monkeys10/val",
                   help="folders under the data root of the 'bench' gallery (1,431 images)")
    p.add_argument("--preset", default="cifar10-class", help="the run queued during the warm-up (quick profile)")
    p.add_argument("--exports", type=int, default=20)
    p.add_argument("--alpha", type=float, default=0.6)
    p.add_argument("--sweep", type=int, default=855)
    p.add_argument("--port", type=int, default=7869)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--queue-after", type=float, default=60.0,
                   help="queue the run this long after the start if the worker never reports its index build")
    p.add_argument("--cases", default="warm-up,exports,origin,sweep",
                   help="comma-separated: warm-up (exports need it), exports, origin, sweep")
    args = p.parse_args(argv)
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="bench_security_"))
    os.environ["CLIPFORGET_CACHE"] = str(cache)
    counter = Tracebacks()
    logging.getLogger().addHandler(counter)
    # tracebacks Gradio prints go to stderr: counted from a copy of file descriptor 2
    err_file = tempfile.NamedTemporaryFile(prefix="bench_security_stderr_", suffix=".log", delete=False)
    saved = os.dup(2)
    os.dup2(err_file.fileno(), 2)
    result: dict = {"cache": str(cache), "gallery": args.gallery}
    try:
        root = data_root(None)
        galleries = {"bench": os.pathsep.join(str(root / d) for d in args.bench_gallery.split(":"))}
        config = AppConfig(cache_dir=str(cache), warm_up="warm-up" in args.cases, galleries=galleries)
        config.default_gallery = args.gallery
        services = AppServices.create(config)
        demo = launch(services, "quick", args.port)
        url = demo.local_url.rstrip("/")
        try:
            cases = set(args.cases.split(","))
            if "warm-up" in cases:
                warm = bench_warm_up(services, url, cache, args.preset, args.timeout, args.queue_after)
                result["warm_up"] = {k: v for k, v in warm.items() if k != "owner"}
                print(json.dumps({"warm_up": result["warm_up"]}), flush=True)  # kept if a later case fails
                owner = warm["owner"]
                if "exports" in cases:
                    token = services.tokens.issue(owner, "api")  # a script's token for the same workspace
                    result["exports"] = bench_exports(url, token, warm["run_id"], args.gallery, args.exports,
                                                      args.alpha)
            else:
                owner = services.workspaces.new_id()
            if "origin" in cases:
                result["origin"] = bench_origin(url, services, owner)
            if "sweep" in cases:
                before, refused = counter.count, counter.refused
                mark = os.path.getsize(err_file.name)
                sweep = bench_sweep(url, args.sweep)
                time.sleep(1.0)
                text = Path(err_file.name).read_text(errors="replace")[mark:]
                sweep.update(tracebacks_in_stderr=text.count("Traceback"), tracebacks_in_log=counter.count - before,
                             one_line_refusals_logged=counter.refused - refused)
                result["sweep"] = sweep
        finally:
            demo.close()
            services.close()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
