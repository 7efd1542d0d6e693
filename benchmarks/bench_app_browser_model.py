"""A user's own model in the app, from the browser: ``app.py --allow-model SPEC``, Chromium picks SPEC, uploads a
forget and a retain folder under one label, runs them (``quick`` profile) and opens the finished run with retrieval.

    .venv/bin/python benchmarks/bench_app_browser_model.py --model RN50:RN50-standin.pt \\
        --forget F --retain R --label monkey --gallery G

Prints the seconds from the click to the finished run and to the opened run; screenshots and the page's text go to
``--out``. Needs Debian's ``chromium`` and the ``playwright`` package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _wait(predicate, timeout: float, what: str, page=None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(1)
    shown = page.locator("body").inner_text()[:3000] if page is not None else ""
    raise SystemExit(f"timed out waiting for {what}\n{shown}")


def _up(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the model spec the server allows and the page picks")
    p.add_argument("--forget", type=Path, required=True, help="folder of images to forget")
    p.add_argument("--retain", type=Path, required=True, help="folder of images to keep")
    p.add_argument("--label", default="monkey")
    p.add_argument("--gallery", type=Path, required=True, help="retrieval gallery folder (small: it is embedded)")
    p.add_argument("--port", type=int, default=7911)
    p.add_argument("--out", type=Path, default=Path("artifacts/app-model"))
    p.add_argument("--timeout", type=float, default=3600, help="seconds the run may take")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(args.port), "--cache-dir", str(args.out / "cache"),
         "--allow-model", args.model, "--gallery", f"own={args.gallery}", "--default-gallery", "own",
         "--profile", "quick", "--no-warm-up"],
        cwd=ROOT, env=dict(os.environ), stdout=open(args.out / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}/"
    try:
        _wait(lambda: _up(url), 180, "the server")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            page.get_by_text("make CLIP forget an image subgroup").wait_for(timeout=60_000)
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
            clicked = time.time()
            page.locator(".cf-stage").first.wait_for(timeout=120_000)
            _wait(lambda: "— done" in page.content() or "— failed" in page.content(), args.timeout, "the run", page)
            done = time.time() - clicked
            page.screenshot(path=str(args.out / "run.png"), full_page=True)
            if "— done" not in page.content():
                print(page.locator("body").inner_text()[:3000])
                return 1
            page.get_by_role("tab", name="2 · Explore and export").click()
            page.get_by_role("button", name="↻ Refresh").click()
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Open", exact=True).click()
            _wait(lambda: page.locator("#cf-after .caption-label").count() >= 5, 900, "retrieval", page)
            opened = time.time() - clicked
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "opened.png"), full_page=True)
            model_shown = args.model in page.locator("body").inner_text()
            browser.close()
        print(f"{args.model}: click → done {done:.0f} s, → opened with retrieval {opened:.0f} s; the opened run "
              f"names its model: {model_shown}")
        return 0 if model_shown else 1
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
