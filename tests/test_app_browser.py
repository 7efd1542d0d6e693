"""End to end in real headless Chromium: load the page, run a preset (quick), move alpha, see retrieval change.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package (its bundled browsers are not
used: ``playwright install`` is never needed). Skipped cleanly when either is missing. Saves a screenshot to
``artifacts/app_browser.png`` (gitignored).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    sync_playwright = _playwright()  # skip before any expensive set-up
    from test_app_client import free_port
    from test_service import make_fixture, make_service

    from clipforget.app.ui import build_ui, launch_kwargs

    tmp = tmp_path_factory.mktemp("browser")
    fx = make_fixture(tmp)
    service = make_service(tmp / "cache", fx["gallery"])
    demo = build_ui(service, default_profile="quick")
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(service, "127.0.0.1", free_port()))
    yield demo.local_url, sync_playwright
    demo.close()


def _captions(page, elem_id: str) -> list[str]:
    return page.locator(f"#{elem_id} .caption-label").all_inner_texts()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_preset_run_slider_and_retrieval_in_chromium(app_url):
    url, sync_playwright = app_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            page.get_by_text("make CLIP forget an image subgroup").wait_for(timeout=60_000)
            page.get_by_role("button", name="Run preset").click()
            status = page.locator(".cf-stage").first
            status.wait_for(timeout=60_000)
            # the page stays usable during the run: switch tabs and back while it trains
            page.get_by_role("tab", name="2 · Explore and export").click()
            page.get_by_role("tab", name="1 · Set up and run").click()
            _wait_for(lambda: "— done" in page.content() or "— failed" in page.content(), 600, "the run to end")
            assert "— done" in page.content(), page.locator("body").inner_text()[:2000]

            page.get_by_role("tab", name="2 · Explore and export").click()
            page.get_by_role("button", name="Open", exact=True).click()
            _wait_for(lambda: len(_captions(page, "cf-after")) >= 5, 180, "retrieval results")
            slider = page.locator("input[type=range]").first
            slider.focus()
            page.keyboard.press("Home")  # alpha = 0: theta(alpha) is the original model
            _wait_for(lambda: _captions(page, "cf-after") == _captions(page, "cf-before"), 60, "alpha 0 results")
            at_zero = _captions(page, "cf-after")
            assert not any("NEW" in c or "LEFT" in c for c in at_zero)
            slider.focus()
            page.keyboard.press("End")  # alpha = 1: the unlearned model
            changed = _wait_for(lambda: (c := _captions(page, "cf-after")) != at_zero and c, 60,
                                "the θ(α) gallery to change")
            assert changed != at_zero
            assert page.locator(".js-plotly-plot").count() >= 1
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "app_browser.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert shutil.which(str(CHROMIUM))
