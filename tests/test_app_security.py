"""The app attacked and misused over HTTP (gradio_client and a raw HTTP client), one test per defect of issue 13.

Each test reproduces what was found against a running server -- forged or copied identities, uploaded HTML served
from the app's origin, refused zips filling the disk, model specs probing the file system, corrupt zip members,
name clashes, NaN alpha, unescaped markup, stale files -- and checks the fixed behaviour (docs/security.md).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from test_app_client import launch_fixture_app
from test_service import cifar_files, make_fixture, model_spec

from clipforget.app import housekeeping
from clipforget.app.identity import COOKIE, HEADER
from clipforget.app.service import AppServices
from clipforget.app.ui.render import render_status
from clipforget.core.errors import DataError
from clipforget.settings import get_setting

EVIL_HTML = b"<html><body><script>localStorage.setItem('pwned', '1'); document.title = 'pwned'</script></body></html>"
EVIL_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg"><script>localStorage.setItem("pwned", "1")</script>'
            b'<circle r="5"/></svg>')


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sec")
    demo, service, fx = launch_fixture_app(tmp)
    yield demo.local_url, service, fx, tmp
    demo.close()


def client(url: str, **kwargs) -> Client:
    return Client(url, verbose=False, **kwargs)


def owner_of(c: Client, service: AppServices) -> str:
    owner = service.tokens.verify(c.cookies.get(COOKIE), "browser")
    assert owner, "the server set no workspace cookie"
    return owner


def plant_run(service: AppServices, owner: str, title: str = "victim run", state: str = "cancelled") -> str:
    """A run folder owned by ``owner`` (what a finished, cancelled run leaves), without running anything."""
    run_id = f"20000101-000000-{title.replace(' ', '_')}-{os.urandom(4).hex()}"
    folder = service.runs.runs_dir / run_id
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"run_id": run_id, "owner": owner, "title": title, "model": "m",
                                                 "setting": "cifar10", "created": time.time()}))
    (folder / "progress.json").write_text(json.dumps({"state": state, "title": title}))
    return run_id


def listed(c: Client) -> list[str]:
    return [value for _, value in c.predict(api_name="/list_runs")["choices"]]


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# 1. identity and served files ---------------------------------------------------------------------------------------

def test_uploaded_html_and_svg_are_never_served_inline_from_the_app(app, tmp_path):
    url, service, _, _ = app
    url = url.rstrip("/")
    attacker = client(url)
    evil = []
    for name, body in (("evil.html", EVIL_HTML), ("evil.svg", EVIL_SVG)):
        (tmp_path / name).write_bytes(body)
        evil.append(handle_file(str(tmp_path / name)))
    report, _, _ = attacker.predict(evil, [], [], "x", "", api_name="/check_uploads")
    assert "2 skipped" in report  # kept on disk as uploaded, reported as not images
    stored = sorted((service.workspaces.root / owner_of(attacker, service)).rglob("evil.*"))
    assert [p.name for p in stored] == ["evil.html", "evil.svg"]
    # the app's copies -- and anything else of the cache -- are not served at all
    for path in [*stored, service.cache / "workspace.key", Path("/etc/passwd")]:
        r = httpx.get(f"{url}/gradio_api/file={path}", cookies=attacker.cookies)  # not even to the uploader
        assert r.status_code == 404, (path, r.status_code)
        assert b"script" not in r.content
    # Gradio's own upload copies are served as downloads in a sandbox, never as a page of the app's origin
    gradio_copies = [p for p in Path(os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio")).rglob("evil.*")
                     if p.read_bytes() in (EVIL_HTML, EVIL_SVG)]
    assert gradio_copies
    bystander = client(url)
    bystander.predict(api_name="/list_runs")
    for path in gradio_copies:
        assert httpx.get(f"{url}/gradio_api/file={path}").status_code == 403  # no workspace: nothing
        assert httpx.get(f"{url}/gradio_api/file={path}", cookies=bystander.cookies).status_code == 404  # not theirs
        r = httpx.get(f"{url}/gradio_api/file={path}", cookies=attacker.cookies)  # the uploader's own copy
        assert r.status_code == 200
        assert r.headers["content-disposition"].startswith("attachment")
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]


def test_model_check_reveals_no_server_path(app):
    url, service, _, _ = app
    url = url.rstrip("/")
    text = client(url).predict("RN50:openai", api_name="/check_model")
    assert str(service.cache) not in text and "/tmp" not in text and "open_clip" not in text


def test_a_copied_or_forged_identity_opens_no_other_workspace(app):
    url, service, _, _ = app
    url = url.rstrip("/")
    victim = client(url)
    victim_owner = owner_of(victim, service)
    run_id = plant_run(service, victim_owner)
    assert listed(victim) == [run_id]  # control: the victim sees the run

    attacker = client(url)
    assert listed(attacker) == []
    with pytest.raises(Exception, match="no such run"):
        attacker.predict(run_id, "airplane", "tiny", api_name="/open_run")
    attacker.session_hash = victim.session_hash  # Gradio's session id is sent in the clear: it opens nothing
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        listed(attacker)

    forged = [victim_owner, f"{victim_owner}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
              service.tokens.issue(victim_owner, "api")]  # the raw id, a bad signature, a token of another kind
    for value in forged:
        stolen = client(url, httpx_kwargs={"cookies": {COOKIE: value}})
        with pytest.raises(httpx.HTTPStatusError, match="403"):
            stolen.predict(api_name="/list_runs")
        r = httpx.post(f"{url}/gradio_api/queue/join", cookies={COOKIE: value},
                       json={"data": [], "fn_index": 0, "session_hash": "forged0001"})
        assert r.status_code == 403 and "no workspace" in r.json()["detail"]
    with pytest.raises(httpx.HTTPStatusError, match="403"):
        client(url, headers={HEADER: victim.cookies[COOKIE]}).predict(api_name="/list_runs")
    assert listed(victim) == [run_id]

    # a fresh browser gets its own signed cookie (HttpOnly: the page's scripts cannot read it)
    r = httpx.get(url)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert service.tokens.verify(cookie.split(";")[0].split("=", 1)[1]) not in (None, victim_owner)
    config = httpx.get(f"{url}/config").text  # nothing secret in the page's configuration any more
    assert victim_owner not in config and '"secret"' not in config and "clipforget-workspace" not in config


def test_api_tokens_reopen_their_own_workspace(app):
    url, service, _, _ = app
    url = url.rstrip("/")
    token = client(url).predict(api_name="/new_api_token")
    owner = service.tokens.verify(token, "api")
    assert owner
    run_id = plant_run(service, owner, "api run")
    assert listed(client(url, headers={HEADER: token})) == [run_id]  # any client holding the token
    assert listed(client(url)) == []


# 2. refused uploads leave nothing ----------------------------------------------------------------------------------

def zeros_zip(path: Path, members: int = 26, size: int = 19_900_000) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(members):
            with zf.open(f"z{i:02d}.png", "w", force_zip64=True) as out:
                chunk = bytes(1 << 20)
                left = size
                while left > 0:
                    out.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
    return path


def test_a_refused_zip_leaves_the_disk_as_it_was(app, tmp_path):
    url, service, _, _ = app
    url = url.rstrip("/")
    bomb = zeros_zip(tmp_path / "bomb.zip")
    assert bomb.stat().st_size < 1_000_000  # ~0.5 MB that unpacks to 517 MB
    c = client(url)
    c.predict([], [], [], "", "", api_name="/check_uploads")  # the workspace exists before the measurement
    before = bytes_under(service.cache)
    for _ in range(3):
        with pytest.raises(Exception, match="unpacks to"):
            c.predict([handle_file(str(bomb))], [], [], "x", "", api_name="/check_uploads")
        with pytest.raises(Exception, match="unpacks to"):
            c.predict([handle_file(str(bomb))], [], [], "x", "", model_spec(), "quick", api_name="/start_upload")
    assert bytes_under(service.cache) == before
    assert not list(service.workspaces.root.rglob("*.partial"))


def test_the_workspace_quota_refuses_uploads_and_keeps_nothing(fixture_tmp):
    tmp, fx = fixture_tmp
    service = AppServices.create(_config(tmp, workspace_quota_mb=0.005), housekeeping_thread=False)
    owner = service.workspaces.new_id()
    with pytest.raises(DataError, match="quota"):
        service.runs.save_uploads(owner, "forget", fx["forget"], "q")  # ~0.3 MB into a 5 kB quota
    assert bytes_under(service.workspaces.root) == 0
    with pytest.raises(DataError, match="quota"):
        service.runs.save_uploads(owner, "retain", fx["retain"], "q")


# 3. model specs ----------------------------------------------------------------------------------------------------

def test_model_specs_outside_the_allow_list_are_refused_without_loading(app):
    url, service, _, _ = app
    url = url.rstrip("/")
    c = client(url)
    loaded_before = set(service.models._bundles)  # the models loaded so far
    replies = {spec: c.predict(spec, api_name="/check_model")
               for spec in ("ViT-H-14:/etc/hostname", "RN50:/etc/passwd", "/etc", "/nonexistent", "ViT-L-14:openai",
                            "../../etc", "run:../../etc")}
    assert set(service.models._bundles) == loaded_before
    for spec, text in replies.items():
        assert "not offered on this server" in text, (spec, text)  # one answer, decided before any file access
        assert "IndexError" not in text and "safetensors" not in text
    with pytest.raises(Exception, match="not offered"):
        c.predict("cifar10-class", "airplane", "/etc", "quick", api_name="/start_preset")
    assert "available" in c.predict(model_spec(), api_name="/check_model")


# 4. and 5. zips and names ------------------------------------------------------------------------------------------

def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "JPEG")
    return buf.getvalue()


def _patch_member(data: bytes, name: str, local_offset: int, central_offset: int, value_fn) -> bytes:
    buf = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    for start, offset in ((info.header_offset, local_offset), (_central_entry(buf, name), central_offset)):
        old = struct.unpack_from("<H", buf, start + offset)[0]
        struct.pack_into("<H", buf, start + offset, value_fn(old))
    return bytes(buf)


def _central_entry(buf: bytearray, name: str) -> int:
    pos = buf.find(b"PK\x01\x02")
    while pos != -1:
        length = struct.unpack_from("<H", buf, pos + 28)[0]
        if bytes(buf[pos + 46 : pos + 46 + length]).decode() == name:
            return pos
        pos = buf.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(name)


def corrupt_zip(path: Path) -> Path:
    """Five members: two good, one with a bad CRC, one flagged encrypted, one Deflate64 (method 9)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, color in (("good1.jpg", "red"), ("crc.jpg", "blue"), ("enc.jpg", "green"), ("d64.jpg", "white"),
                            ("good2.jpg", "black")):
            zf.writestr(f"planes/{name}", _jpeg(color))
    data = buf.getvalue()
    data = _patch_member(data, "planes/d64.jpg", 8, 10, lambda _: 9)
    data = _patch_member(data, "planes/enc.jpg", 6, 8, lambda flags: flags | 1)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("planes/crc.jpg")
    raw = bytearray(data)
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    raw[info.header_offset + 30 + name_len + extra_len + 200] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def test_corrupt_zip_members_are_skipped_with_their_reason(app, tmp_path):
    url, _, _, _ = app
    url = url.rstrip("/")
    archive = corrupt_zip(tmp_path / "planes.zip")
    report, skipped, _ = client(url).predict([handle_file(str(archive))], [], [], "airplane", "",
                                             api_name="/check_uploads")
    reasons = {Path(row[1]).name: row[2] for row in skipped["data"]}
    assert "forget: 5 files received, 2 images readable" in report, report
    assert "Bad CRC" in reasons["crc.jpg"] and "encrypted" in reasons["enc.jpg"]
    assert "unsupported compression" in reasons["d64.jpg"]


def test_a_zip_members_skip_is_listed_with_the_zip_name(app, tmp_path):
    url, _, _, _ = app
    archive = tmp_path / "holiday.zip"
    picture = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(picture, "PNG")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pics/a.png", picture.getvalue())
        zf.writestr("pics/notes.txt", "not an image")
    _, skipped, _ = client(url.rstrip("/")).predict([handle_file(str(archive))], [], [], "x", "",
                                                    api_name="/check_uploads")
    assert [row[1] for row in skipped["data"]] == ["holiday.zip/pics/notes.txt"]


def test_every_uploaded_file_is_kept_whatever_its_name(app, tmp_path):
    url, service, _, _ = app
    url = url.rstrip("/")
    names = ["猫.jpg", "犬.jpg", "ねこ 2.jpg", "Ünïcødé.jpg", "a b.jpg", "a_b.jpg", ".jpg", "x.JPG", "X.jpg"]
    sources = cifar_files(("cat",), len(names))["cat"]
    files = []
    for name, src in zip(names, sources, strict=True):
        (tmp_path / "n").mkdir(exist_ok=True)
        (tmp_path / "n" / name).write_bytes(src.read_bytes())
        files.append(handle_file(str(tmp_path / "n" / name)))
    report, skipped, _ = client(url).predict(files, [], [], "cat", "", api_name="/check_uploads")
    assert f"forget: {len(names)} files received, {len(names)} images readable" in report, (report, skipped)

    # a retain zip with 12 dog + 12 truck files of the same names: 24 images, labels from the folders
    same = tmp_path / "retain.zip"
    with zipfile.ZipFile(same, "w") as zf:
        for label in ("dog", "truck"):
            for i, src in enumerate(cifar_files((label,), 12)[label]):
                zf.write(src, f"{label}/{i:04d}.jpg")
    owner = service.workspaces.new_id()
    service.runs.save_uploads(owner, "forget", [p for p in sources], "n")
    folder = service.runs.save_uploads(owner, "retain", [same], "n")
    assert service.runs.inspect_upload(folder, None).labels == {"dog": 12, "truck": 12}
    root = service.runs.upload_root(owner, "n")
    task, _ = get_setting("folders").build(32, 0, "quick", forget_dir=root / "forget",
                                           retain_dir=next(p for p in (root / "retain").iterdir() if p.is_dir()),
                                           label="cat")
    assert len(task.retain) + len(task.calibration_retain) == 24
    assert task.retain.label_counts()["dog"] + task.calibration_retain.label_counts()["dog"] == 12


def test_two_thousand_files_are_all_counted(fixture_tmp, tmp_path):
    tmp, _ = fixture_tmp
    service = AppServices.create(_config(tmp), housekeeping_thread=False)
    rng = np.random.default_rng(0)
    files = []
    for i in range(2000):
        path = tmp_path / f"{i % 7}.png" if i < 7 else tmp_path / f"d{i // 500}" / f"{i % 500}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
        files.append(path)
    assert len({p.name for p in files}) < 600  # many name clashes
    folder = service.runs.save_uploads(service.workspaces.new_id(), "forget", files, "many")
    report = service.runs.inspect_upload(folder, "x")
    assert report.files == report.images == 2000 and not report.skipped


# 6. numbers ----------------------------------------------------------------------------------------------------------

def raw_call(url: str, cookies: dict, endpoint: str, body: str) -> str:
    """Gradio's two-step HTTP API with a hand-written JSON body (NaN is valid for Python's json, not for clients)."""
    with httpx.Client(cookies=cookies, timeout=60) as http:
        r = http.post(f"{url}/gradio_api/call/{endpoint}", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        event = r.json()["event_id"]
        return http.get(f"{url}/gradio_api/call/{endpoint}/{event}").text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1.5", "-0.1", '"0.5; drop"'])
def test_alpha_is_checked_on_the_server(app, value):
    url, service, _, _ = app
    url = url.rstrip("/")
    c = client(url)
    for endpoint in ("export", "set_alpha"):
        body = json.dumps({"data": [0.5] + ([] if endpoint == "export" else ["airplane", "tiny"])})
        reply = raw_call(url, c.cookies, endpoint, body.replace("0.5", value, 1))
        assert "event: error" in reply, reply
        message = json.loads(reply.split("data:", 1)[1])["error"] or ""
        assert message.startswith("α must be") or "imum value" in message, reply
    assert not list(service.workspaces.root.rglob("*nan*.zip"))


# 8. smaller ones -----------------------------------------------------------------------------------------------------

def test_user_text_is_shown_as_text(app, tmp_path):
    url, _, fx, _ = app
    url = url.rstrip("/")
    c = client(url)
    html_label = "<img src=x onerror=alert(1)>"
    report, _, _ = c.predict([handle_file(str(p)) for p in fx["forget"][:2]], [], [], html_label, "",
                             api_name="/check_uploads")
    assert "<img" not in report and "&lt;img" in report
    model = c.predict("<b>bold</b>", api_name="/check_model")
    assert "<b>" not in model and "&lt;b&gt;" in model


def test_same_image_in_forget_and_retain_is_reported(app):
    url, _, fx, _ = app
    url = url.rstrip("/")
    plane = handle_file(str(fx["forget"][0]))
    report, _, _ = client(url).predict([plane], [plane], [], "airplane", "vehicle", api_name="/check_uploads")
    assert "both the forget and the retain gallery" in report


def test_an_interrupted_run_says_so(fixture_tmp):
    tmp, _ = fixture_tmp
    service = AppServices.create(_config(tmp), housekeeping_thread=False)
    owner = service.workspaces.new_id()
    run_id = plant_run(service, owner, "killed", state="running")
    folder = service.runs.runs_dir / run_id
    # status.json of a process that looks alive (pid reuse after a restart): still not "running" to the app
    (folder / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "host": os.uname()[1]}))
    assert service.runs.list_runs(owner)[0]["state"] == "interrupted"
    with pytest.raises(DataError) as err:
        service.runs.open(owner, run_id)
    assert "interrupted" in str(err.value) and "running" not in str(err.value)
    html = render_status(service.runs.snapshot(owner, run_id))
    assert "interrupted" in html and "restarted" in html


def test_stale_partials_are_removed_at_start_up(fixture_tmp):
    tmp, _ = fixture_tmp
    config = _config(tmp)
    service = AppServices.create(config, housekeeping_thread=False)
    owner = service.workspaces.new_id()
    run_id = plant_run(service, owner, "grid", state="done")
    stale = [service.runs.runs_dir / run_id / "alpha_grid" / "tiny" / ".embeddings.f16.npy.partial",
             service.workspaces.path(owner) / "uploads" / "u" / ".forget.partial" / "a.jpg",
             service.cache / "unpacked" / ".x-123.partial" / "b.jpg"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    keep = service.runs.runs_dir / run_id / "alpha_grid" / "tiny" / "grid.json"
    keep.write_text("{}")
    fresh = AppServices.create(config, housekeeping_thread=False)
    assert fresh.startup_report["partials_removed"] >= 3
    assert not any(p.exists() for p in stale) and keep.exists()


def test_unused_workspaces_expire_with_their_runs(fixture_tmp):
    tmp, _ = fixture_tmp
    service = AppServices.create(_config(tmp), housekeeping_thread=False)
    old, recent = service.workspaces.new_id(), service.workspaces.new_id()
    now = time.time()
    service.workspaces.touch(old, now=now - 40 * housekeeping.DAY)
    service.workspaces.touch(recent, now=now - 2 * housekeeping.DAY)
    old_run = plant_run(service, old, "old")
    recent_run = plant_run(service, recent, "recent")
    for run_id in (old_run, recent_run):  # runs created long ago: the workspace's last use decides
        spec = json.loads((service.runs.runs_dir / run_id / "job.json").read_text())
        spec["created"] = now - 60 * housekeeping.DAY
        (service.runs.runs_dir / run_id / "job.json").write_text(json.dumps(spec))
    expired = housekeeping.expire_workspaces(service.workspaces, service.runs, 30 * housekeeping.DAY, now)
    assert old in expired and recent not in expired
    assert not (service.workspaces.root / old).exists() and not (service.runs.runs_dir / old_run).exists()
    assert (service.runs.runs_dir / recent_run).exists()


def test_empty_gallery_message_has_no_server_path(fixture_tmp, tmp_path):
    tmp, _ = fixture_tmp
    empty = tmp_path / "srv-gallery-folder"
    empty.mkdir()
    service = AppServices.create(_config(tmp, galleries={"empty": str(empty)}), housekeeping_thread=False)
    with pytest.raises(DataError) as err:
        service.galleries.get(service.config.model, "empty")
    assert str(tmp_path) not in service.scrub(str(err.value)) and "no readable images" in str(err.value)
    assert str(tmp_path) not in service.scrub(f"gallery folder not found: {empty}/x")


# helpers ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixture_tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secsvc")
    return tmp, make_fixture(tmp)


def _config(tmp: Path, **overrides):
    from clipforget.app.config import AppConfig

    cache = tmp / f"cache-{os.urandom(3).hex()}"
    shutil.rmtree(cache, ignore_errors=True)
    return AppConfig(**{"model": model_spec(), "cache_dir": str(cache), **overrides})


def test_runs_are_deleted_only_by_their_owner_with_their_uploads(fixture_tmp):
    tmp, _ = fixture_tmp
    service = AppServices.create(_config(tmp), housekeeping_thread=False)
    owner, other = service.workspaces.new_id(), service.workspaces.new_id()
    run_id = plant_run(service, owner, "mine")
    spec_file = service.runs.runs_dir / run_id / "job.json"
    spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), "source": {"upload": "u9"}}))
    upload = service.runs.upload_root(owner, "u9")
    (upload / "forget").mkdir(parents=True)
    (upload / "forget" / "a.jpg").write_bytes(b"x" * 1000)
    assert service.runs.usage(owner) >= 1000
    with pytest.raises(DataError, match="no such run"):
        service.runs.delete(other, run_id)
    service.runs.delete(owner, run_id)
    assert not (service.runs.runs_dir / run_id).exists() and not upload.exists()
    assert service.runs.list_runs(owner) == []


def test_an_oversized_upload_request_is_refused_before_gradio_reads_it(app):
    url, service, _, _ = app
    url = url.rstrip("/")
    limit = int(service.config.max_total_upload_mb * 1e6) + 10_000_000
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:  # headers only: no client sends 510 MB
        sock.sendall(f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {limit + 1}\r\n"
                     "Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode())
        assert sock.recv(200).split(b"\r\n")[0].endswith(b"413 Request Entity Too Large")
    anonymous = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.txt", b"hello")})
    assert anonymous.status_code == 403  # an upload needs a workspace
    cookies = httpx.get(url).cookies
    ok = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.txt", b"hello")}, cookies=cookies)
    assert ok.status_code == 200 and len(ok.json()) == 1


# 3. every event, handle and file bound to its workspace (issue 21) ---------------------------------------------------

def fn_index(url: str, api_name: str) -> int:
    return next(d["id"] for d in httpx.get(f"{url}/config").json()["dependencies"] if d.get("api_name") == api_name)


def join(url: str, cookies, session_hash: str, api_name: str = "list_runs", data=None) -> httpx.Response:
    return httpx.post(f"{url}/gradio_api/queue/join", cookies=cookies, timeout=30,
                      json={"data": data or [], "fn_index": fn_index(url, api_name), "session_hash": session_hash})


def stream(url: str, cookies, session_hash: str) -> tuple[int, str]:
    """Status and body of the session's event stream, read until its first completed event (or refused)."""
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session_hash},
                      cookies=cookies, timeout=30) as r:
        text = ""
        for line in r.iter_lines():
            text += line + "\n"
            if "process_completed" in line or "close_stream" in line:
                break
        return r.status_code, text


def test_the_event_stream_goes_only_to_its_workspace(app):
    url, service, _, _ = app
    url = url.rstrip("/")
    victim, attacker = client(url), client(url)
    plant_run(service, owner_of(victim, service), "secret title")
    attacker.predict(api_name="/list_runs")
    session = "victimsession" + os.urandom(4).hex()
    joined = join(url, victim.cookies, session)
    assert joined.status_code == 200
    event_id = joined.json()["event_id"]
    # the hole of issue 21: the stream of a known session hash, with no cookie, carried the victim's outputs
    status, text = stream(url, None, session)
    assert status == 403 and "secret title" not in text
    status, text = stream(url, attacker.cookies, session)
    assert status == 404 and "secret title" not in text
    status, text = stream(url, victim.cookies, session)  # control: the owner gets it
    assert status == 200 and "secret title" in text
    # every other route that names the session or the event refuses the attacker as well
    for method, route, body in (
            ("GET", f"/gradio_api/heartbeat/{session}", None),
            ("GET", f"/gradio_api/deep_link?session_hash={session}", None),
            ("GET", f"/gradio_api/call/list_runs/{event_id}", None),
            ("POST", "/gradio_api/cancel", {"session_hash": session, "fn_index": 0, "event_id": event_id}),
            ("POST", "/gradio_api/reset", {"event_id": event_id})):
        r = httpx.request(method, f"{url}{route}", json=body, cookies=attacker.cookies, timeout=10)
        assert r.status_code == 404, (route, r.status_code)
    assert join(url, attacker.cookies, session).status_code == 404  # nor can it join the victim's session


def test_files_given_to_one_workspace_open_nowhere_else(app, tmp_path):
    url, _, _, _ = app
    url = url.rstrip("/")
    owner, other = client(url, download_files=False), client(url)
    other.predict(api_name="/list_runs")
    picture = tmp_path / "private.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(picture)
    report, _, previews = owner.predict([handle_file(str(picture))], [], [], "x", "", api_name="/check_uploads")
    assert previews, report
    image = previews[0]["image"]  # a thumbnail Gradio serves from its cache, by content hash
    preview = image["path"] if isinstance(image, dict) else image
    served = httpx.get(f"{url}/gradio_api/file={preview}", cookies=owner.cookies)
    assert served.status_code == 200 and served.content[:4] in (b"RIFF", b"\x89PNG", b"\xff\xd8\xff\xe0")
    assert httpx.get(f"{url}/gradio_api/file={preview}").status_code == 403
    assert httpx.get(f"{url}/gradio_api/file={preview}", cookies=other.cookies).status_code == 404
    # an uploaded file named in another workspace's event inputs is refused before the app reads it
    uploaded = httpx.post(f"{url}/gradio_api/upload", files={"files": ("p.png", picture.read_bytes())},
                          cookies=owner.cookies).json()[0]
    file_data = {"path": uploaded, "orig_name": "p.png", "meta": {"_type": "gradio.FileData"}}
    assert join(url, other.cookies, "thief" + os.urandom(4).hex(), "check_uploads",
                [[file_data], [], [], "x", ""]).status_code == 404
    assert join(url, owner.cookies, "owner" + os.urandom(4).hex(), "check_uploads",
                [[file_data], [], [], "x", ""]).status_code == 200


def test_routes_not_in_the_route_table_are_closed(app):
    url, _, _, _ = app
    url = url.rstrip("/")
    cookies = httpx.get(url).cookies
    for method, route in (("GET", "/monitoring"), ("GET", "/monitoring/summary"), ("GET", "/gradio_api/runs"),
                          ("GET", "/gradio_api/run-history/records"), ("POST", "/login"), ("GET", "/logout"),
                          ("GET", "/gradio_api/proxy=http://127.0.0.1/"), ("GET", "/gradio_api/vibe-code"),
                          ("POST", "/gradio_api/component_server"), ("GET", "/gradio_api/dev/reload"),
                          ("GET", "/file=/etc/passwd"), ("GET", "/gradio_api/profiling/summary")):
        r = httpx.request(method, f"{url}{route}", cookies=cookies, timeout=10)
        assert r.status_code == 404, (route, r.status_code)
    for route in ("/", "/config", "/gradio_api/info", "/theme.css", "/favicon.ico"):  # what a page needs stays
        assert httpx.get(f"{url}{route}", cookies=cookies, timeout=10).status_code == 200, route


@pytest.fixture(scope="module")
def finished_run(app) -> Path:
    """One real quick run of the upload fixture (its folder), for the tests that need a model to explore."""
    url, service, fx, _ = app
    c = client(url.rstrip("/"))
    c.predict([handle_file(str(p)) for p in fx["forget"]], [handle_file(str(p)) for p in fx["retain"]], [],
              "airplane", "", model_spec(), "quick", api_name="/start_upload")
    final = c.predict(api_name="/watch_start_upload")
    assert "done" in final, final
    return service.runs.runs_dir / c.predict(api_name="/list_runs")["value"]


@pytest.mark.parametrize("endpoint", ["/set_alpha", "/retrieve"])
def test_odd_gallery_arguments_get_a_message_and_no_traceback(app, finished_run, endpoint, caplog, capfd):
    url, service, _, _ = app
    url = url.rstrip("/")
    c = client(url)
    run_id = give_run(service, finished_run, owner_of(c, service))
    c.predict(run_id, "airplane", "tiny", api_name="/open_run")
    capfd.readouterr()
    for gallery in (None, 5, "g" * 10_000, ["tiny"], {"a": 1}):
        with pytest.raises(Exception) as err:
            c.predict(0.5, "airplane", gallery, api_name=endpoint)
        text = str(err.value)
        assert "gallery" in text and "could not do this" not in text, (gallery, text)
    assert c.predict(0.5, "airplane", "tiny", api_name=endpoint)[-1]  # control: a good call still answers
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert "Traceback" not in capfd.readouterr().err


def test_result_thumbnails_come_from_the_apps_route_to_workspaces_only(app, finished_run):
    url, service, _, _ = app
    url = url.rstrip("/")
    c = client(url, download_files=False)
    run_id = give_run(service, finished_run, owner_of(c, service))
    before = c.predict(run_id, "airplane", "tiny", api_name="/open_run")[-2]
    assert before
    links = [item["image"]["url"] for item in before]
    assert all(link.startswith(f"{url}/clipforget/thumb/") for link in links), links[:2]
    assert all(item["image"]["path"] == item["image"]["url"] for item in before)  # no server path in the output
    served = httpx.get(links[0], cookies=c.cookies)
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"
    assert served.headers["content-type"] == "image/png" and "sandbox" in served.headers["content-security-policy"]
    assert httpx.get(links[0]).status_code == 403  # no workspace, no thumbnail
    # gradio_client (download_files=True, its default) fetches output files as file=<path>: that works too
    fetched = httpx.get(f"{url}/gradio_api/file={links[0]}", cookies=c.cookies)
    assert fetched.status_code == 200 and fetched.content == served.content
    assert httpx.get(f"{url}/gradio_api/file={links[0]}").status_code == 403
    for bad in ("0" * 20 + ".png", "../workspace.key", "%2e%2e/workspace.key", links[0].rsplit("/", 1)[1][:-4]):
        assert httpx.get(f"{url}/clipforget/thumb/{bad}", cookies=c.cookies).status_code == 404, bad


def give_run(service: AppServices, source: Path, owner: str) -> str:
    run_id = f"{source.name[:40]}-copy{os.urandom(4).hex()}"
    target = service.runs.runs_dir / run_id
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("alpha_grid"))
    spec = json.loads((source / "job.json").read_text())
    (target / "job.json").write_text(json.dumps({**spec, "run_id": run_id, "owner": owner}))
    return run_id
