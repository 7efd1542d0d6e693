"""Issue 20 in real headless Chromium: the auditor's loop on the `demo` gallery with the default model.

"marmoset" top-40 becomes the forget set, "monkey" top-200 minus those the retain set, label "monkey"; the run
(quick profile) starts from the Explore tab; the report downloads; the report file is opened with the network
blocked and the plot draws and every thumbnail loads. Screenshots: ``artifacts/auditor_app.png`` and
``artifacts/auditor_report.png``; the report itself: ``artifacts/auditor_report.html`` (all gitignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _captions, _playwright, _wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo_app_url(tmp_path_factory):
    """The app as a user meets it (default model, `demo` gallery), quick profile selected."""
    sync_playwright = _playwright()
    from test_app_client import free_port

    from clipforget.app.config import BUILTIN_GALLERIES, AppConfig
    from clipforget.app.service import AppServices
    from clipforget.app.ui import build_ui, launch_kwargs
    from clipforget.core.paths import data_root
    from clipforget.models.factory import DEFAULT_MODEL, find_bundled_checkpoint

    if find_bundled_checkpoint(DEFAULT_MODEL) is None:
        pytest.skip(f"assets/{DEFAULT_MODEL} is not built")
    missing = [part for part in BUILTIN_GALLERIES["demo"] if not (data_root() / part).is_dir()]
    if missing:
        pytest.skip(f"the demo gallery's folders are missing under the data root: {', '.join(missing)}")
    cache = tmp_path_factory.mktemp("browser_loop") / "cache"
    service = AppServices.create(AppConfig(model=DEFAULT_MODEL, cache_dir=str(cache), backend="thread"))
    service.galleries.get(DEFAULT_MODEL, "demo")  # what the first search of a new server builds (once)
    demo = build_ui(service, default_profile="quick")
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(service, "127.0.0.1", free_port()))
    yield demo.local_url, sync_playwright
    demo.close()
    service.close()


def test_forget_from_the_gallery_run_and_offline_report_in_chromium(demo_app_url):
    url, sync_playwright = demo_app_url
    ARTIFACTS.mkdir(exist_ok=True)
    report_file = ARTIFACTS / "auditor_report.html"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 2000}).new_page()
            page.goto(url)
            page.get_by_text("make CLIP forget an image subgroup").wait_for(timeout=60_000)
            page.get_by_role("tab", name="2 · Explore and export").click()
            page.get_by_text("Forget from the gallery").click()
            form = page.locator("#cf-selection")
            form.get_by_label("Forget: prompt").fill("marmoset")
            form.get_by_label("Retain: prompt").fill("monkey")
            numbers = form.locator("input[type=number]")
            numbers.nth(0).fill("40")
            numbers.nth(1).fill("200")
            form.get_by_label("Coarse label the forget images lose").fill("monkey")
            form.get_by_label("Retain label (blank: each image's gallery label)").fill("monkey")
            page.get_by_role("button", name="Run on this selection").click()
            _wait_for(lambda: "Started" in form.inner_text(), 300, "the run to start")

            page.get_by_role("tab", name="1 · Set up and run").click()
            _wait_for(lambda: "— done" in page.content() or "— failed" in page.content(), 900, "the run to end")
            assert "— done" in page.content(), page.locator("body").inner_text()[:2000]
            assert "Gallery demo: forget" in page.content()

            page.get_by_role("tab", name="2 · Explore and export").click()
            page.get_by_role("button", name="↻ Refresh").click()
            page.wait_for_timeout(1500)
            page.get_by_role("button", name="Open", exact=True).click()
            _wait_for(lambda: len(_captions(page, "cf-after")) >= 5, 300, "retrieval results")
            assert "α*" in page.locator("body").inner_text()

            page.get_by_role("button", name="Report (one HTML file: curves, metrics, before / after top-k)").click()
            link = page.locator("#cf-report-link")
            link.wait_for(timeout=180_000)
            with page.expect_download(timeout=60_000) as download_info:
                link.click()
            download = download_info.value
            assert download.suggested_filename.endswith("-report.html")
            download.save_as(str(report_file))
            page.screenshot(path=str(ARTIFACTS / "auditor_app.png"), full_page=True)

            # the report, offline: no request may leave the file, yet the plot draws and the thumbnails load
            offline = browser.new_context(offline=True, viewport={"width": 1300, "height": 1800})
            requests: list[str] = []
            offline.on("request", lambda r: requests.append(r.url))
            offline.route("http*://**/*", lambda route: route.abort())
            report = offline.new_page()
            report.goto(report_file.resolve().as_uri())
            report.locator("#curves .main-svg").first.wait_for(timeout=60_000)
            assert report.locator("#curves .scatterlayer .trace").count() >= 2  # the curves are drawn
            widths = report.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) >= 20 and all(w > 0 for w in widths), widths
            assert not [u for u in requests if not u.startswith(("file:", "data:"))], requests
            body = report.locator("body").inner_text()
            assert "held-out images only" in body and "Score" in body and "marmoset" in body
            report.screenshot(path=str(ARTIFACTS / "auditor_report.png"), full_page=True)
        finally:
            browser.close()
    assert Path(report_file).stat().st_size < 8e6
