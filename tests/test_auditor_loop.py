"""Issue 20, the auditor's loop without a browser: a gallery selection becomes a run whose training images are
recorded and never counted in an audit; the report is one self-contained file with no server path and nothing of
another workspace; picked images of another workspace are refused; the compare view answers."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from plotly.offline import get_plotlyjs
from test_service import make_fixture, make_service

from clipforget.app import compare
from clipforget.app.identity import COOKIE
from clipforget.app.selection import SelectionRequest, split_rows
from clipforget.app.ui.handlers import Handlers
from clipforget.core.errors import DataError
from clipforget.core.paths import data_root
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.report import held_out_audit, hit_mark
from clipforget.retrieval.search import top_k_rows


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_top_k_never_returns_an_excluded_row():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)
    excluded = np.array([True, False, True, False, False])
    assert top_k_rows(scores, 2).tolist() == [0, 1]  # control: the excluded rows are the best ones
    assert top_k_rows(scores, 2, excluded).tolist() == [1, 3]
    assert top_k_rows(scores, 10, excluded).tolist() == [1, 3, 4]


def test_training_images_are_never_counted_in_a_held_out_audit():
    rng = np.random.default_rng(0)
    n, dim = 60, 8
    query = _unit(rng.normal(size=(1, dim)))[0]
    before = _unit(rng.normal(size=(n, dim)) + 3 * query)  # every image close to the prompt
    after = _unit(rng.normal(size=(n, dim)) + 3 * query)
    labels = [f"img{i}" for i in range(n)]
    paths = [f"/g/{i}.jpg" for i in range(n)]
    best = np.argsort(-(before @ query))[:10]
    trained = np.zeros(n, dtype=bool)
    trained[best[::2]] = True  # half of the original top-10 trained the run
    forgotten = trained.copy()
    result = held_out_audit("p", query, before, after, 10, labels, paths, trained, forgotten)
    shown = {h.image_path for h in [*result.before, *result.after]}
    assert not shown & {paths[i] for i in np.flatnonzero(trained)}
    assert result.excluded_trained == int(trained.sum()) == 5
    assert result.forgotten_counts == (0, 0)  # the forgotten images here are exactly the trained ones
    everything = held_out_audit("p", query, before, after, 10, labels, paths, np.zeros(n, bool), forgotten)
    assert everything.forgotten_counts[0] == 5  # control: without the mask they would have been counted


def test_held_out_split_is_seeded_and_disjoint():
    rows = list(range(100, 140))
    train, held = split_rows(rows)
    assert len(held) == 8 and not set(train) & set(held) and sorted(train + held) == rows
    assert split_rows(rows) == (train, held)


def test_images_of_the_forgotten_subgroup_after_unlearning_are_marked_as_a_failure():
    assert hit_mark("entered", forgotten=True, after=True) == "⚠ still found"
    assert hit_mark("", forgotten=True, after=True) == "⚠ still found"  # stayed in the top-k: found all the same
    assert hit_mark("entered", forgotten=False, after=True) == "→ new"
    assert hit_mark("left", forgotten=True, after=False) == "← left"
    assert hit_mark("", forgotten=False, after=False, trained=True) == "● trained on"


def _request(service, owner: str):
    return SimpleNamespace(headers={}, cookies={COOKIE: service.tokens.issue(owner)}, request=None)


@pytest.fixture(scope="module")
def selection_run(tmp_path_factory):
    """A quick run made from a selection of the 'tiny' gallery (CIFAR-10 test images), workspace A."""
    tmp = tmp_path_factory.mktemp("loop")
    fx = make_fixture(tmp)
    service = make_service(tmp / "cache", fx["gallery"])
    owner = service.workspaces.new_id()
    asked = SelectionRequest("tiny", "a photo of an airplane", 6, [], "a photo of a ship", 12, [])
    with pytest.raises(DataError, match="not indexed"):  # a request never builds an index (issue 39)
        service.runs.start_selection(owner, asked, "airplane", None, profile="quick")
    service.galleries.get(service.config.model, "tiny")  # what the retrieval panel did before the selection
    snap = service.runs.start_selection(owner, asked, "airplane", None, profile="quick")
    job = service.runs.backend.wait(snap["id"], timeout=900)
    assert job["state"] == "done", job.get("error")
    yield service, owner, snap["id"], tmp
    service.close()


def test_a_selection_run_records_its_training_images_and_the_audit_leaves_them_out(selection_run):
    service, owner, run_id, _ = selection_run
    record = RunFolder(service.runs.runs_dir / run_id).trained_on()
    counts = record["counts"]
    assert record["gallery"] == "tiny" and len(record["trained"]) == counts["forget_train"] + counts["retain_train"]
    assert not set(record["trained"]) & set(record["heldout"])
    task = RunFolder(service.runs.runs_dir / run_id).config()["sizes"]
    assert task["forget"] == counts["forget_train"] and task["calibration_forget"] == counts["forget_heldout"]
    view = service.runs.open(owner, run_id)
    k = len(view.galleries.get(view.model_spec, "tiny"))  # the whole gallery: every trained image is in it
    shown = view.retrieve("a photo of an airplane", view.chosen_alpha, "tiny", k)
    marked = {h["path"] for h in shown["before"] if h["trained"]}
    assert marked == set(record["trained"])  # the panel marks exactly the training images
    audit = view.retrieve("a photo of an airplane", view.chosen_alpha, "tiny", k, held_out_only=True)
    counted = {h["path"] for h in [*audit["before"], *audit["after"]]}
    assert counted and not counted & set(record["trained"])
    assert len(audit["before"]) == k - len(record["trained"])


def test_the_report_is_self_contained_without_server_paths_or_other_workspaces(selection_run):
    service, owner, run_id, tmp = selection_run
    other = service.workspaces.new_id()
    with pytest.raises(DataError):
        service.report(other, run_id, 0.5, "airplane", "tiny")  # another workspace cannot report this run
    started = time.perf_counter()
    out = service.report(owner, run_id, 0.5, "a photo of an airplane", "tiny")
    seconds = time.perf_counter() - started
    text = out.read_text(encoding="utf-8")
    assert out.parent == service.workspaces.exports_dir(owner) and out.suffix == ".html"
    assert service.download_path(owner, out.name) == out and service.download_path(other, out.name) is None
    plotly_js = get_plotlyjs()
    assert plotly_js in text  # inlined: the plot draws offline
    own = text.replace(plotly_js, "")  # the report's own markup, without the library's code
    assert "Plotly.newPlot" in own and not re.search(r"<script[^>]*\ssrc=|<link[^>]*href=|src=['\"]http", own)
    assert own.count("data:image/jpeg;base64,") >= 10 and "Score" in own
    for root in (tmp, service.cache, data_root(), Path(__file__).resolve().parents[1], Path.home()):
        assert str(root) not in text, root
    assert not re.search(r"(?<![\w.])/(?:tmp|root|home|work|usr|var)/", own)
    assert other not in text and owner not in text
    assert "held-out images only" in text and "trained on were left out" in text
    assert out.stat().st_size < 8e6 and seconds < 60


def test_picked_images_of_another_workspace_are_refused(selection_run):
    service, owner, _, _ = selection_run
    handlers = Handlers(service)
    intruder = service.workspaces.new_id()
    handle = service.tokens.image_handle(owner, "tiny", 3)
    assert service.tokens.image_row(owner, "tiny", handle) == 3
    assert service.tokens.image_row(intruder, "tiny", handle) is None
    assert service.tokens.image_row(owner, "demo", handle) is None  # bound to its gallery too
    assert service.tokens.image_row(owner, "tiny", "3-forged") is None
    picks = {"gallery": "tiny", "forget": [handle], "retain": []}
    with pytest.raises(DataError, match="not this workspace's picks"):
        handlers.start_from_selection("tiny", "", 0, "a photo of a ship", 6, "airplane", "", "", picks, "",
                                      service.config.model, "quick", _request(service, intruder))
    uploads = service.workspaces.root / intruder / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())  # refused before anything was copied


def test_compare_view_overlays_runs_and_answers_fast(selection_run):
    service, owner, run_id, _ = selection_run
    views = [service.runs.open(owner, run_id)] * 3
    compare.compare_runs(views, "a photo of an airplane", "tiny")  # first call: caches warm
    started = time.perf_counter()
    result = compare.compare_runs(views, "a photo of an airplane", "tiny")
    assert time.perf_counter() - started < 1.0
    assert len(result.headers) == 4 and result.rows[-1][0] == "Score" and len(result.top_k) == 3
    assert result.figure_json.count('"legendgroup"') >= 3
    with pytest.raises(DataError):
        compare.compare_runs(views[:1], "x", "tiny")


def test_report_command_writes_the_same_kind_of_file(selection_run, tmp_path, capsys):
    from clipforget.cli.main import main

    service, _, run_id, tmp = selection_run
    index = service.galleries.get(service.config.model, "tiny").folder
    out = tmp_path / "report.html"
    code = main(["report", "--run", str(service.runs.runs_dir / run_id), "--index", str(index), "--prompt",
                 "a photo of an airplane", "-k", "5", "--out", str(out), "--device", "cpu"])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "forgotten subgroup in the held-out top-5" in printed and "KB in" in printed
    own = out.read_text(encoding="utf-8").replace(get_plotlyjs(), "")
    assert own.count("data:image/jpeg;base64,") == 10 and str(tmp) not in own
    assert "python -m clipforget unlearn --forget forget/ --retain retain/ --label airplane" in own


def test_a_clicked_thumbnail_becomes_a_pick_of_this_workspace_only(selection_run):
    service, owner, run_id, _ = selection_run
    handlers = Handlers(service)
    view = service.runs.open(owner, run_id)
    shown = view.retrieve("a photo of a ship", 0.0, "tiny")["after"]
    empty = {"gallery": "", "forget": [], "retain": []}
    picks, text = handlers.pick_after("retain", empty, run_id, 0.0, "a photo of a ship", "tiny",
                                      SimpleNamespace(index=2), _request(service, owner))
    assert picks["gallery"] == "tiny" and len(picks["retain"]) == 1 and "1 for the retain set" in text
    assert service.tokens.image_row(owner, "tiny", picks["retain"][0]) == shown[2]["id"]
    unchanged, _ = handlers.pick_after("off", picks, run_id, 0.0, "a photo of a ship", "tiny",
                                       SimpleNamespace(index=0), _request(service, owner))
    assert unchanged == picks  # picking is off: a click adds nothing
    intruder = service.workspaces.new_id()
    with pytest.raises(DataError):  # another workspace cannot even open the run the picks come from
        handlers.pick_after("forget", empty, run_id, 0.0, "a photo of a ship", "tiny", SimpleNamespace(index=0),
                            _request(service, intruder))
