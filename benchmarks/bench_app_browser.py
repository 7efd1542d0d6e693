"""The app from the browser, timed from the click: Chromium clicks Run, waits for the run to finish and opens it with
retrieval. Two journeys:

* the stakeholder's first click (default): ``app.py`` as ``make app`` starts it (the bundled model, the demo gallery,
  the worker's warm-up) on a **fresh cache**; Chromium clicks "Run preset" on the default preset at once. Prints when
  the page first shows progress and when the first retrieval view appears (README's promise, issue 40).

      .venv/bin/python benchmarks/bench_app_browser.py

* a user's own model: ``app.py --allow-model SPEC``; Chromium picks SPEC, uploads a forget and a retain folder under
  one label and runs them (``quick`` profile, a small gallery, no warm-up).

      .venv/bin/python benchmarks/bench_app_browser.py --model RN50:RN50-standin.pt \\
          --forget F --retain R --label monkey --gallery G

Screenshots and the server's log go to ``--out``. Needs Debian's ``chromium`` and the ``playwright`` package (never
``playwright install``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from common import serve_app

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _wait(predicate, timeout: float, what: str, page=None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(1)
    shown = page.locator("body").inner_text()[:3000] if page is not None else ""
    raise SystemExit(f"timed out waiting for {what}\n{shown}")


def _upload_and_run(page, args: argparse.Namespace) -> None:
    box = page.get_by_label("Model", exact=False).first
    box.fill(args.model)
    box.press("Enter")
    page.get_by_role("tab", name="Upload galleries").click()
    for label, folder in (("Forget gallery (images or .zip)", args.forget),
                          ("Retain gallery (images or .zip)", args.retain)):
        block = page.locator(".block", has=page.get_by_text(label, exact=True)).last
        block.locator("input[type=file]").first.set_input_files(sorted(str(f) for f in folder.iterdir()))
        page.wait_for_timeout(2000)
    page.get_by_label("Coarse label the forget images lose").fill(args.label)
    page.get_by_label("Retain label", exact=False).fill(args.label)
    page.get_by_role("button", name="Run on uploads").click()


def _second_run(page, timeout: float) -> str:
    """The same preset again on the now warm caches: what every later click costs."""
    page.get_by_role("tab", name="1 · Set up and run").click()
    status = page.locator("#cf-status")
    page.get_by_role("button", name="Run preset").click()
    clicked = time.time()
    _wait(lambda: "since it was started" in status.inner_text(), 60, "the second run to start", page)
    _wait(lambda: "— done" in status.inner_text(), timeout, "the second run", page)
    done = time.time() - clicked
    page.get_by_role("tab", name="2 · Explore and export").click()
    page.get_by_role("button", name="↻ Refresh").click()
    page.wait_for_timeout(2000)
    first = page.locator("#cf-run-info").inner_text()
    page.get_by_role("button", name="Open", exact=True).click()
    _wait(lambda: page.locator("#cf-run-info").inner_text() != first and page.locator("#cf-after img").count() >= 5,
          900, "the second run's retrieval", page)
    return f"; the second click (warm caches): → done {done:.0f} s, → opened {time.time() - clicked:.0f} s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a user's own model: the spec the server allows and the page picks "
                   "(default: the stakeholder's first click on the bundled model's default preset)")
    p.add_argument("--forget", type=Path, help="with --model: folder of images to forget")
    p.add_argument("--retain", type=Path, help="with --model: folder of images to keep")
    p.add_argument("--label", default="monkey")
    p.add_argument("--gallery", type=Path, help="with --model: retrieval gallery folder (small: it is embedded)")
    p.add_argument("--port", type=int, default=7911)
    p.add_argument("--out", type=Path, default=Path("artifacts/app-browser"),
                   help="screenshots, the server's log and the cache (removed first: a fresh cache)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds the run may take")
    args = p.parse_args()
    if args.model and not (args.forget and args.retain and args.gallery):
        p.error("--model needs --forget, --retain and --gallery")
    from playwright.sync_api import sync_playwright

    shutil.rmtree(args.out / "cache", ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    own = ["--allow-model", args.model, "--gallery", f"own={args.gallery}", "--default-gallery", "own", "--profile",
           "quick", "--no-warm-up"] if args.model else []
    server = serve_app(["--cache-dir", str(args.out / "cache"), *own], args.port, args.out / "server.log", 180)
    url = f"http://127.0.0.1:{args.port}/"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            page.get_by_text("make CLIP forget an image subgroup").wait_for(timeout=60_000)
            print(f"server start → page shown {time.time() - started:.0f} s", flush=True)
            if args.model:
                _upload_and_run(page, args)
            else:
                page.get_by_role("button", name="Run preset").click()
            clicked = time.time()
            status = page.locator("#cf-status")
            _wait(lambda: "since it was started" in status.inner_text(), 60, "progress", page)
            shown = time.time() - clicked
            page.screenshot(path=str(args.out / "first-progress.png"))
            print(f"click → progress shown {shown:.1f} s: {status.inner_text()[:300]!r}", flush=True)
            _wait(lambda: "— done" in status.inner_text() or "— failed" in status.inner_text(), args.timeout,
                  "the run", page)
            done = time.time() - clicked
            page.screenshot(path=str(args.out / "run.png"), full_page=True)
            if "— done" not in status.inner_text():
                print(page.locator("body").inner_text()[:3000])
                return 1
            page.get_by_role("tab", name="2 · Explore and export").click()
            page.get_by_role("button", name="↻ Refresh").click()
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Open", exact=True).click()
            _wait(lambda: page.locator("#cf-after img").count() >= 5, 900, "retrieval", page)
            opened = time.time() - clicked
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "opened.png"), full_page=True)
            model = args.model or "the default preset"
            model_shown = args.model is None or args.model in page.locator("body").inner_text()
            again = "" if args.model else _second_run(page, args.timeout)
            browser.close()
        print(f"{model}: click → progress shown {shown:.1f} s, → done {done:.0f} s, → opened with retrieval "
              f"{opened:.0f} s (fresh cache, server started {clicked - started:.0f} s before the click)"
              + (f"; the opened run names its model: {model_shown}" if args.model else "") + again)
        return 0 if model_shown else 1
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
