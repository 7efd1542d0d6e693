"""The whole app flow through gradio_client on a tiny fixture: upload, run (quick), move alpha, retrieve, export."""

from __future__ import annotations

import io
import re
import socket
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from test_service import make_fixture, make_service, model_spec  # same fixture as the service tests

from clipforget.app.ui import build_ui, launch_kwargs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_fixture_app(tmp: Path):
    """The app in this process on the upload fixture (quick profile), as the app tests share it."""
    fx = make_fixture(tmp)
    service = make_service(tmp / "cache", fx["gallery"])
    demo = build_ui(service, default_profile="quick")
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(service, "127.0.0.1", free_port()))
    return demo, service, fx


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    demo, service, fx = launch_fixture_app(tmp)
    yield demo, service, fx, tmp
    demo.close()


def _workspace_of(service, run_id: str) -> str:
    import json

    return json.loads((service.runs.runs_dir / run_id / "job.json").read_text())["owner"]


def _captions(gallery) -> list[str]:
    return [item.get("caption") or "" for item in gallery]


def test_full_flow_through_the_client(app):
    demo, service, fx, tmp = app
    client = Client(demo.local_url, verbose=False, download_files=str(tmp / "downloads"))
    forget = [handle_file(str(p)) for p in fx["forget"]]
    retain = [handle_file(str(p)) for p in fx["retain"]]

    report, skipped, previews = client.predict(forget, retain, [], "airplane", "", api_name="/check_uploads")
    assert "forget: 12 files received, 8 images readable" in report
    assert 0 < len(previews) <= 16 and all(p["image"].endswith((".webp", ".png", ".jpeg")) for p in previews)
    reasons = {Path(row[1]).name: row[2] for row in skipped["data"]}
    assert "too large" in reasons["huge.png"] and "pixels" in reasons["wide.png"]
    assert "not a readable image" in reasons["broken.jpg"]

    status = client.predict(forget, retain, [], "airplane", "", model_spec(), "quick", api_name="/start_upload")
    assert "Uploads" in status
    final = client.predict(api_name="/watch_start_upload")
    assert "done" in final and "Error" not in final, final

    listed = client.predict(api_name="/list_runs")
    run_id = listed["value"]
    assert len(listed["choices"]) == 1 and "done" in listed["choices"][0][0]
    runs = service.runs.list_runs(_workspace_of(service, run_id))
    assert [r["id"] for r in runs] == [run_id] and runs[0]["state"] == "done"

    opened = client.predict(run_id, "marmoset", "tiny", api_name="/open_run")
    info, alpha, prompt, _, metrics, verdict, _, before, after = opened
    assert prompt == "airplane"  # a newly opened run starts on its own subject, not the last prompt typed
    alpha = alpha["value"] if isinstance(alpha, dict) else alpha
    assert "α*" in info and alpha == pytest.approx(service.runs.open(
        _workspace_of(service, run_id), run_id).chosen_alpha)
    assert metrics["data"][-1][0] == "Score"
    # one rounding of the Score: the run list, the table at α* and the summary say the same number
    score = str(metrics["data"][-1][-1])
    assert f"Score {score} ·" in listed["choices"][0][0] and f"Score at α*: {score}" in info, (score, listed, info)
    assert len(before) == len(after) == 5
    # the verdict: the subgroup's photos its label finds, original -> theta(alpha*); the eight held-out airplanes
    # are too few to trust, and it says so with the count
    assert re.search(r"by its label: “airplane” <b>\d+ → \d+</b>", verdict), verdict
    assert "too few evaluation images to trust" in verdict and "Score" in verdict

    at0 = client.predict(0.0, "airplane", "tiny", api_name="/set_alpha")
    at1 = client.predict(1.0, "airplane", "tiny", api_name="/set_alpha")
    assert _captions(at0[4]) == [c.replace("⚠ still found · ", "") for c in _captions(at0[5])]  # theta(0): original
    assert "0 left, 0 entered" in at0[3]
    assert _captions(at1[5]) != _captions(at0[5])  # scores (and maybe items) move with alpha
    view = service.runs.open(_workspace_of(service, run_id), run_id)
    for a, out in ((0.0, at0), (1.0, at1)):  # the table is the library's table at that alpha
        headers, rows = view.metrics_table(a)
        assert out[1]["headers"] == headers
        assert [[str(x) for x in r] for r in out[1]["data"]] == [[str(x) for x in r] for r in rows]

    retrieved = client.predict(1.0, "cat", "tiny", api_name="/retrieve")
    assert "**cat**" in retrieved[3] and len(retrieved[5]) == 5
    markup = client.predict(1.0, "<img src=x onerror=alert(1)>", "tiny", api_name="/retrieve")[3]
    assert "<img" not in markup and "&lt;img" in markup  # a prompt is shown as text

    link = client.predict(1.0, api_name="/export")
    href = re.search(r'href="(clipforget/download/[^"]+)"', link).group(1)
    download = httpx.get(demo.local_url + href, cookies=client.cookies, timeout=60)
    assert download.status_code == 200 and download.headers["content-disposition"].startswith("attachment")
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        names = zf.namelist()
    assert any(n.endswith("README.md") for n in names) and any(n.endswith(".safetensors") for n in names)

    # another browser (another client session) sees none of it
    other = Client(demo.local_url, verbose=False)
    assert other.predict(api_name="/list_runs")["choices"] == []
    with pytest.raises(Exception, match="no such run"):
        other.predict(run_id, "airplane", "tiny", api_name="/open_run")
    # the export link is no bearer secret: nobody but its workspace gets the file (issue 21)
    assert httpx.get(demo.local_url + href, timeout=30).status_code == 403
    assert httpx.get(demo.local_url + href, cookies=other.cookies, timeout=30).status_code == 404
    exports = service.workspaces.exports_dir(_workspace_of(service, run_id))
    assert [f.name for f in exports.iterdir()] == [href.rsplit("/", 1)[1]]
    client.predict(run_id, api_name="/delete_run")  # the run's exports go with it
    assert httpx.get(demo.local_url + href, cookies=client.cookies, timeout=30).status_code == 404
    assert list(exports.iterdir()) == []


def test_unavailable_model_shows_a_message_not_a_traceback(app):
    demo, *_ = app
    client = Client(demo.local_url, verbose=False)
    text = client.predict("RN50:openai", api_name="/check_model")
    assert "cannot be used here" in text and "not offered" in text and "Traceback" not in text
    assert "ready" not in text and "available" not in client.predict("RN50:openai", api_name="/check_model")
    assert "available" in client.predict(model_spec(), api_name="/check_model")


def test_preset_errors_are_messages(app):
    demo, *_ = app
    client = Client(demo.local_url, verbose=False)
    with pytest.raises(Exception, match="--imagenet"):
        client.predict("living17-monkey", "marmoset", model_spec(), "quick", api_name="/start_preset")
