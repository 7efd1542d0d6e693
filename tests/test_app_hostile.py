"""Hostile neighbours (issue 39): the six attack cases re-run as tests where they are fast.

1. hostile text in every sink the app writes for a person (report, model card, status lines, links), opened in
   Chromium from ``file://`` with script detection, plus a fast check without a browser;
2. a page on another port of 127.0.0.1 can neither read (no ``Access-Control-Allow-Origin``) nor act (403);
3. concurrent exports of one run and alpha give one valid zip, no temporary member; concurrent upload checks;
   messages without workspace ids;
4. the warm-up's index build stops between batches for a queued run, and the queue says what the worker does;
5. Gradio's own argument checks answer with a short message and no traceback;
6. claims of session hashes are bounded per caller; a selection never builds an index inside the request.

The load versions (20 concurrent exports, a run queued during a fresh warm-up, the 855-call sweep) are in
``benchmarks/bench_security.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client, handle_file
from test_app_browser import CHROMIUM, CHROMIUM_ARGS
from test_app_client import launch_fixture_app
from test_service import model_spec

from clipforget.app.bindings import Bindings
from clipforget.app.export import model_card
from clipforget.app.identity import COOKIE
from clipforget.app.messages import Scrubber
from clipforget.app.ui.render import render_status
from clipforget.core.errors import RunCancelled
from clipforget.core.escape import html_text, md_text, script_json
from clipforget.pipeline import report as report_module

PWN = "window.__pwned = (window.__pwned || 0) + 1"
HOSTILE = [f"<script>{PWN}</script>", f'"><img src=x onerror="{PWN}">', f"</script><script>{PWN}</script>",
           f"<svg onload={PWN}>", f"[x](javascript:{PWN})", f"<!--<script>{PWN}//-->"]
LABEL = HOSTILE[0]  # labels may have 100 characters
RETAIN_LABEL = HOSTILE[1]
ALSO = HOSTILE[2] + ", " + HOSTILE[3]
PROMPT = HOSTILE[2] + HOSTILE[4]


def no_raw_markup(text: str, markdown: bool = False) -> None:
    """None of the hostile strings' markup survives in ``text`` (the app's own tags may be there); ``markdown``:
    nor Markdown's (a link is text in HTML)."""
    bad_ones = ["<script>window", "<img src=x", "<svg onload", "onerror=\"window", "<!--<script"]
    for bad in bad_ones + (["](javascript:"] if markdown else []):
        assert bad not in text, (bad, text[max(0, text.find(bad) - 200): text.find(bad) + 200])


# 1. one escaping rule, every sink --------------------------------------------------------------------------------

def test_the_escaping_rule_neutralises_hostile_text():
    for h in HOSTILE:
        no_raw_markup(html_text(h))
        no_raw_markup(md_text(h), markdown=True)
        assert "<" not in script_json({"name": h}) and "</script" not in script_json([h])
        assert json.loads(script_json({"name": h})) == {"name": h}  # still the same data for the script
    assert "\n" not in md_text("a\n# heading\n|cell|")
    status = render_status({"title": LABEL, "state": "failed", "model": PROMPT, "profile": ALSO,
                            "error": LABEL, "message": PROMPT})
    no_raw_markup(status)


def fake_view(text: str) -> SimpleNamespace:
    spec = SimpleNamespace(source={"described": {"forget": text, "retain": text, "calibration": text}},
                           profile=text)
    return SimpleNamespace(config={"task": text, "classnames": [text, "cat"], "sizes": {"forget": text}},
                           spec=spec, title=text, model_label=text, chosen_alpha=0.5,
                           dir=Path("/nowhere/20000101-run"),
                           metrics_table=lambda alpha: ([text, "acc"], [[text, 1.0], ["Score", 50.0]]))


def test_the_model_card_and_the_report_carry_hostile_text_as_text(monkeypatch):
    card = model_card(fake_view(LABEL + ALSO + PROMPT), 0.5)
    no_raw_markup(card, markdown=True)
    folder = SimpleNamespace(
        name="run", model_spec="m", chosen_alpha=0.5, metrics=lambda: {"stage_seconds": {LABEL: 1.0}},
        config=lambda: {"task": LABEL, "classnames": [ALSO], "sizes": {"forget": LABEL}},
        forgotten_names=lambda: [ALSO])
    monkeypatch.setattr(report_module, "model_hash", lambda folder: "h")
    monkeypatch.setattr(report_module, "data_hash", lambda folder: "h")
    monkeypatch.setattr(report_module, "accuracy_figure", lambda folder: {"data": [{"name": PROMPT, "x": [0],
                                                                                     "y": [1]}], "layout": {}})
    hit = report_module.ReportHit("/nowhere.jpg", LABEL, 0.5)
    monkeypatch.setattr(report_module, "thumbnail_data_uri", lambda path: "data:image/jpeg;base64,")
    stress = {"alpha": 0.5, "k": 20, "subgroup_images": 3, "weight_distance": 0.1,
              "verdicts": [{"test": LABEL, "verdict": ALSO, "numbers": PROMPT}],
              "names": {"texts": [{"text": PROMPT, "family": LABEL, "before": 9, "after": 1}], "families": [ALSO]},
              "relearning": {"lr": 1e-4, "texts": [PROMPT], "rows": [
                  {"attack": LABEL, "model": ALSO, "steps": 0, "zero_shot": 0.1, "zero_shot_ratio": 0.2,
                   "top_k": 1}]}}
    monkeypatch.setattr(report_module, "read_stress", lambda folder: stress)  # the stress section is a sink too
    inputs = report_module.ReportInputs(0.5, [report_module.PromptResult(PROMPT, [hit], [hit], 0, ALSO, 1)],
                                        LABEL, PROMPT, ALSO, {"forget": LABEL, "retain": ALSO}, PROMPT,
                                        ([LABEL], [[ALSO]]))
    no_raw_markup(report_module.render_report(folder, inputs))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    demo, service, fx = launch_fixture_app(tmp)
    yield demo.local_url.rstrip("/"), service, fx, tmp
    demo.close()


def owner_of(c: Client, service) -> str:
    owner = service.tokens.verify(c.cookies.get(COOKIE), "browser")
    assert owner
    return owner


@pytest.fixture(scope="module")
def hostile_run(app):
    """One quick run whose label, 'also forget as' texts and file names are hostile; its export and report."""
    url, service, fx, tmp = app
    named = tmp / "named"
    named.mkdir()
    forget = []
    for i, p in enumerate(fx["forget"][:8]):
        target = named / f"<img src=x onerror={i}>{p.suffix}"
        shutil.copyfile(p, target)
        forget.append(target)
    c = Client(url, verbose=False)
    c.predict([handle_file(str(p)) for p in forget], [handle_file(str(p)) for p in fx["retain"]], [], LABEL,
              RETAIN_LABEL, model_spec(), "quick", ALSO, api_name="/start_upload")
    final = c.predict(api_name="/watch_start_upload")
    assert "done" in final, final
    run_id = c.predict(api_name="/list_runs")["value"]
    c.predict(run_id, PROMPT, "tiny", api_name="/open_run")
    export_link = c.predict(0.7, api_name="/export")
    report_link = c.predict(0.7, PROMPT, "tiny", api_name="/report")  # the run id is session state
    owner = owner_of(c, service)
    return SimpleNamespace(client=c, owner=owner, run_id=run_id, status=final, export_link=export_link,
                           report_link=report_link, exports=service.workspaces.exports_dir(owner))


def produced_pages(run, out: Path) -> dict[str, Path]:
    """Every file the app produced for the person, as an HTML page a browser opens (Markdown rendered to HTML)."""
    from markdown_it import MarkdownIt

    pages = {"report": next(run.exports.glob("*-report.html"))}
    with zipfile.ZipFile(next(run.exports.glob("*.zip"))) as zf:
        card = zf.read(next(n for n in zf.namelist() if n.endswith("README.md"))).decode()
    rendered = MarkdownIt("commonmark", {"html": True}).render(card)  # raw HTML on, as many Markdown viewers do
    for name, body in (("model-card", rendered), ("status", run.status), ("links", run.export_link + run.report_link)):
        page = out / f"{name}.html"
        page.write_text(f"<!doctype html><meta charset='utf-8'><body>{body}</body>", encoding="utf-8")
        pages[name] = page
    (out / "model-card.md").write_text(card, encoding="utf-8")
    return pages


def test_every_file_the_app_writes_carries_hostile_text_as_text(hostile_run, tmp_path):
    pages = produced_pages(hostile_run, tmp_path)
    for page in pages.values():
        no_raw_markup(page.read_text(encoding="utf-8"))
    card = (tmp_path / "model-card.md").read_text(encoding="utf-8")
    no_raw_markup(card, markdown=True)
    assert "&lt;script&gt;" in card  # the label is there, as text
    assert "&lt;script&gt;" in pages["report"].read_text(encoding="utf-8")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed")
def test_no_script_runs_from_any_file_the_app_writes(hostile_run, tmp_path):
    from playwright.sync_api import sync_playwright

    pages = produced_pages(hostile_run, tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            for name, page_file in pages.items():
                page = browser.new_page()
                dialogs: list[str] = []

                def on_dialog(dialog, seen: list[str] = dialogs) -> None:
                    seen.append(dialog.message)
                    dialog.dismiss()

                page.on("dialog", on_dialog)
                page.goto(page_file.as_uri(), wait_until="load")
                page.wait_for_timeout(300)
                assert page.evaluate("window.__pwned || 0") == 0 and not dialogs, name
                if name == "report":  # the report's own script (the plot) still runs
                    assert page.locator("#curves .main-svg").count() > 0
                page.close()
        finally:
            browser.close()


# 2. one origin -----------------------------------------------------------------------------------------------------

FOREIGN = "http://127.0.0.1:9999"


def test_a_page_on_another_port_can_neither_read_nor_act(app):
    url, _, _, _ = app
    victim = Client(url, verbose=False)
    victim.predict(api_name="/list_runs")
    cookies = victim.cookies
    config = httpx.get(f"{url}/config", cookies=cookies)
    fn = next(d["id"] for d in config.json()["dependencies"] if d.get("api_name") == "list_runs")
    join = {"data": [], "fn_index": fn, "session_hash": "s" + os.urandom(6).hex()}
    # reading: nothing answers with an allow-origin header, on Gradio's routes or the app's
    for route in ("/", "/config", "/gradio_api/info", "/gradio_api/queue/status", "/clipforget/download/x.zip"):
        r = httpx.get(f"{url}{route}", cookies=cookies, headers={"Origin": FOREIGN})
        assert "access-control-allow-origin" not in r.headers, route
        assert "access-control-allow-credentials" not in r.headers, route
    preflight = httpx.options(f"{url}/gradio_api/queue/join", headers={
        "Origin": FOREIGN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    # acting: every state-changing call with a foreign Origin is refused, even with the victim's cookie
    for route, body in (("/gradio_api/queue/join", join), ("/gradio_api/cancel", {"session_hash": "x"}),
                        ("/gradio_api/upload", None), ("/gradio_api/call/list_runs", {"data": []})):
        r = httpx.post(f"{url}{route}", cookies=cookies, json=body, headers={"Origin": FOREIGN})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers, route
    for bad in ("null", "http://localhost:9999", "http://127.0.0.1", "https://127.0.0.1:" + url.rsplit(":", 1)[1]):
        r = httpx.post(f"{url}/gradio_api/queue/join", cookies=cookies, json=join, headers={"Origin": bad})
        assert r.status_code == 403, bad
    # the app's own origin still works (a browser sends it on every POST of the page)
    ok = httpx.post(f"{url}/gradio_api/queue/join", cookies=cookies, json=join, headers={"Origin": url})
    assert ok.status_code == 200 and "access-control-allow-origin" not in ok.headers


def test_an_allowed_origin_gets_cors_and_others_do_not():
    from clipforget.app.security import SecurityMiddleware

    mw = SecurityMiddleware(None, None, lambda: "w", lambda: [], allowed_origins=["https://Tools.Example.org:443"])
    scope = {"headers": [(b"host", b"127.0.0.1:7860")]}
    assert mw.origin_allowed("https://tools.example.org", scope)
    assert mw.origin_allowed("http://127.0.0.1:7860", scope)
    for bad in ("http://127.0.0.1:9999", "null", "https://127.0.0.1:7860", "http://tools.example.org", "javascript:x"):
        assert not mw.origin_allowed(bad, scope), bad


# 3. concurrent writes ----------------------------------------------------------------------------------------------

def test_concurrent_exports_of_one_run_and_alpha_give_one_valid_zip(app, hostile_run):
    _, service, _, _ = app
    results: list[object] = []

    def export() -> None:
        try:
            results.append(service.export(hostile_run.owner, hostile_run.run_id, 0.35))
        except Exception as err:  # collected: the assertion below shows it
            results.append(err)

    threads = [threading.Thread(target=export) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(isinstance(r, Path) for r in results) and len(results) == 6, results
    assert len({str(r) for r in results}) == 1
    with zipfile.ZipFile(results[0]) as zf:
        assert zf.testzip() is None
        assert not [n for n in zf.namelist() if n.endswith(".tmp") or "/." in n], zf.namelist()
    assert not [p for p in hostile_run.exports.iterdir() if p.name.startswith(".")]  # no temporary left


def test_concurrent_upload_checks_of_one_upload_all_succeed(app):
    _, service, fx, _ = app
    owner = service.workspaces.new_id()
    files = [str(p) for p in fx["forget"]]
    errors: list[BaseException] = []

    def save() -> None:
        try:
            service.runs.save_uploads(owner, "forget", files, "same-upload")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    folder = service.runs.upload_root(owner, "same-upload")
    assert sorted(p.name for p in folder.iterdir()) == ["forget"]  # no partial folder left beside it


def test_messages_show_neither_server_paths_nor_workspace_ids(tmp_path):
    scrub = Scrubber([("<cache>", tmp_path)])
    wid = "0123456789abcdef0123"
    text = scrub(f"[Errno 2] No such file or directory: '{tmp_path}/sessions/{wid}/exports/r-alpha0.50/model/x.tmp'")
    assert wid not in text and str(tmp_path) not in text and "x.tmp" in text


# 4. the warm-up gives way ------------------------------------------------------------------------------------------

def test_an_index_build_stops_between_batches_and_reports_progress(app, tmp_path):
    from clipforget.jobs.galleries import ensure_gallery_index, index_folder

    _, service, fx, _ = app
    bundle = service.models.get(service.config.model)
    source = tmp_path / "gallery"
    source.mkdir()
    for i in range(3):
        for p in fx["forget"][:8]:  # the fixture's airplanes (JPEG)
            shutil.copyfile(p, source / f"{i}-{p.name}")
    cancel = threading.Event()
    seen: list[str] = []

    def progress(stage: str, fraction: float, message: str) -> None:
        seen.append(message)
        cancel.set()  # a run was queued: stop after this batch

    import index_builder.build as build_module

    build = build_module.build

    def small_batches(galleries, out_dir, config=None, encoder=None, report=None, cancel=None):
        config.batch_size = 4
        return build(galleries, out_dir, config, encoder, report, cancel)

    with pytest.MonkeyPatch.context() as mp:  # batches of 4, so that the build has several
        import clipforget.jobs.galleries as galleries_module

        mp.setattr(galleries_module, "build", small_batches)
        with pytest.raises(RunCancelled):
            ensure_gallery_index(tmp_path / "cache", bundle, "small", [source], progress=progress, cancel=cancel)
        assert len(seen) == 1 and " / " in seen[0] and seen[0].endswith(" images"), seen
        assert not (index_folder(tmp_path / "cache", bundle, "small") / "info.json").exists()
        index = ensure_gallery_index(tmp_path / "cache", bundle, "small", [source])  # taken up again later
    assert len(index) > 0


def test_the_queue_says_what_an_idle_worker_is_doing(tmp_path):
    from clipforget.core.atomic import write_json
    from clipforget.jobs.local import LocalBackend
    from clipforget.jobs.workqueue import HEARTBEAT_FILE
    from clipforget.pipeline.folder import RunFolder

    backend = LocalBackend(tmp_path / "queue", workers=0)
    wdir = backend.queue.worker_dir("w1")
    wdir.mkdir(parents=True)
    write_json(wdir / HEARTBEAT_FILE, {"id": "w1", "pid": os.getpid(), "updated": 1e12, "run": None, "activity": {
        "step": "gallery_index", "fraction": 0.15, "message": "preparing the demo gallery, 3,200 / 21,531 images"}})
    backend.queue.is_alive = lambda beat, timeout: True  # type: ignore[method-assign]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(run_dir / RunFolder.PROGRESS, {"state": "queued"})
    ticket = SimpleNamespace(run_id="r", run_dir=run_dir)
    snap = backend._queued(ticket, 0, 0)  # type: ignore[arg-type]
    assert "preparing the demo gallery, 3,200 / 21,531 images" in snap["message"], snap["message"]
    assert "0 of 1 worker(s) busy" not in snap["message"]


# 5. Gradio's own argument checks ---------------------------------------------------------------------------------

def call(url: str, cookies, endpoint: str, data: list) -> str:
    with httpx.Client(cookies=cookies, timeout=60) as http:
        r = http.post(f"{url}/gradio_api/call/{endpoint}", json={"data": data})
        assert r.status_code == 200, r.text
        return http.get(f"{url}/gradio_api/call/{endpoint}/{r.json()['event_id']}").text


def test_arguments_gradio_refuses_get_a_short_message_and_no_traceback(app, capfd, caplog):
    url, _, _, _ = app
    c = Client(url, verbose=False)
    c.predict(api_name="/list_runs")
    capfd.readouterr()
    spec = model_spec()
    bad_calls = [
        ("start_preset", ["no-such-preset", "x", spec, "quick"]),  # not in the list of choices
        ("start_preset", [["a"], {"b": 1}, spec, "nope"]),
        ("check_uploads", [[{"path": 5}], "x", None, "a", ""]),  # file payloads pydantic refuses
        ("check_uploads", ["not a file", [], [], "a", ""]),
        ("start_selection", ["tiny", "a", "lots", "b", {"k": 1}, "x", "", "", spec, "quick"]),  # numbers
        ("start_selection", ["tiny", "a", "1e400", "b", -5, "x", "", "", spec, "fast"]),
    ]
    for endpoint, data in bad_calls:
        reply = call(url, c.cookies, endpoint, data)
        assert "event: error" in reply, (endpoint, reply)
        message = json.loads(reply.split("data:", 1)[1])["error"] or ""
        assert len(message) < 300 and "Traceback" not in message, message
    # the event stream of a session that has no events: Gradio raises inside the stream
    r = httpx.get(f"{url}/gradio_api/queue/data", params={"session_hash": "noevents" + os.urandom(4).hex()},
                  cookies=c.cookies, timeout=30)
    assert r.status_code in (200, 404)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# 6. bounded claims, no index build in a request ---------------------------------------------------------------------

def test_claims_of_one_caller_push_out_only_its_own():
    b = Bindings(max_claims_per_owner=10)
    assert b.claim("session", "victim-session", "victim")
    for i in range(500):
        b.claim("session", f"s{i}", "attacker")
    assert b.allowed("session", "victim-session", "victim")
    assert not b.claim("session", "victim-session", "attacker")
    assert sum(b.allowed("session", f"s{i}", "attacker") for i in range(500)) == 10


def test_one_request_cannot_claim_session_hashes_in_bulk(app):
    url, _, _, _ = app
    c = Client(url, verbose=False)
    c.predict(api_name="/list_runs")
    many = "&".join(f"session_hash=bulk{i}" for i in range(500))
    assert httpx.get(f"{url}/gradio_api/deep_link?{many}", cookies=c.cookies).status_code == 404
