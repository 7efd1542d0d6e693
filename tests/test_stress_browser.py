"""Issue 37 in real headless Chromium: a finished quick run opened in the app, its stress test started from the
"Stress test" tab without relearning, the progress shown while it works and the verdict table with the three tests
at the end. Saves the tab at 1280x800 to ``artifacts/stress-tab.png`` (docs/screenshots/stress-tab.png is a copy).

Needs what ``test_app_browser`` needs (Debian's chromium, the playwright package); skipped cleanly without them.
"""

from __future__ import annotations

import time

import pytest
from test_app_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    _captions,
    _playwright,
    _selected_run,
    _start_preset,
    _wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    sync_playwright = _playwright()  # skip before any expensive set-up
    from test_app_client import launch_fixture_app

    # Gradio's start-up check gives the new server 3 s per try; on a loaded machine it answers later
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("gradio.networking.url_ok", _patient_url_ok)
        demo, service, _ = launch_fixture_app(tmp_path_factory.mktemp("stress_browser"))
    yield demo.local_url, sync_playwright, service
    demo.close()


def _patient_url_ok(url: str) -> bool:
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.head(url, timeout=30).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def test_stress_test_of_an_opened_run_shows_the_three_verdicts_in_chromium(app_url):
    url, sync_playwright, _ = app_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = _start_preset(browser, url)  # the monkeys preset, quick profile
            _wait_for(lambda: "— done" in page.content() or "— failed" in page.content(), 3600, "the run to end")
            assert "— done" in page.content(), page.locator("body").inner_text()[:2000]
            page.get_by_role("tab", name="2 · Explore and export").click()
            _wait_for(lambda: _selected_run(page), 120, "the finished run in the runs list", page)
            page.get_by_role("button", name="Open", exact=True).click()
            _wait_for(lambda: len(_captions(page, "cf-after")) >= 5, 600, "retrieval results", page)

            page.get_by_role("tab", name="4 · Stress test").click()
            result = page.locator("#cf-stress-result")
            _wait_for(lambda: "No stress test of this run yet" in result.inner_text(), 60, "the empty stress view",
                      page)
            relearn = page.locator("#cf-stress-relearn input[type=checkbox]")
            assert not relearn.is_checked()  # the fast test: no relearning
            page.locator("#cf-stress-texts textarea").fill("a tiny <b>monkey</b> on a branch")
            page.get_by_role("button", name="Is it really gone? Run the stress test").click()
            _wait_for(lambda: page.locator("#cf-stress-status progress").count() > 0
                      or page.locator("#cf-stress-verdicts").count() > 0, 300, "the stress test's progress", page)
            _wait_for(lambda: page.locator("#cf-stress-verdicts").count() > 0, 1800, "the verdict table", page)
            tests = page.locator("#cf-stress-verdicts tbody tr td:first-child b").all_inner_texts()
            assert [t.split(" (")[0] for t in tests] == ["other names", "relearning", "unseen photos"], tests
            shown = result.inner_text()
            assert "not run" in shown  # relearning: asked for with the checkbox
            assert "Error" not in page.locator("#cf-stress-status").inner_text()
            # the user's text is tried and shown as text, never as markup
            assert "monkey" not in page.locator("#cf-stress-result b").all_inner_texts()

            page.set_viewport_size({"width": 1280, "height": 800})
            page.evaluate("window.scrollTo(0, 0)")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "stress-tab.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
