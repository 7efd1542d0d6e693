"""The app's stress test service (issue 37) without running one: another workspace's run is refused, one test at a
time per workspace and on the server, the user's texts are checked, the preset's subgroup is found in a gallery, and
everything shown is escaped."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from test_app_security import plant_run
from test_service import make_fixture, make_service

from clipforget.app.stress import BUSY_HERE, BUSY_SERVER, MAX_TEXTS, StressJob, parse_texts, subgroup_parts
from clipforget.core.errors import DataError
from clipforget.pipeline.report import stress_html


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app_stress")
    svc = make_service(tmp / "cache", make_fixture(tmp)["gallery"])
    yield svc
    svc.close()


def test_another_workspaces_run_is_refused_and_an_unfinished_one_is_not_tested(service):
    owner, other = service.workspaces.new_id(), service.workspaces.new_id()
    run_id = plant_run(service, owner, "mine")
    with pytest.raises(DataError, match="no such run in this workspace"):
        service.stress.start(other, run_id, "tiny")
    with pytest.raises(DataError, match="no such run in this workspace"):
        service.stress.existing(other, run_id)
    with pytest.raises(DataError, match="not finished"):  # the owner's, but cancelled
        service.stress.start(owner, run_id, "tiny")
    with pytest.raises(DataError, match="no such run"):
        service.stress.start(owner, "../" + run_id, "tiny")
    assert service.stress.running(owner) is None and service.stress.running(other) is None


def test_one_stress_test_at_a_time_per_workspace_and_on_the_server(service, monkeypatch):
    stress = service.stress
    a, b = service.workspaces.new_id(), service.workspaces.new_id()
    monkeypatch.setattr(stress.runs, "open", lambda owner, run_id: SimpleNamespace(title="t"))
    busy = StressJob(a, "run-a")
    monkeypatch.setitem(stress._jobs, a, busy)
    with pytest.raises(DataError) as here:
        stress.start(a, "run-a2", "tiny")
    assert str(here.value) == BUSY_HERE
    with pytest.raises(DataError) as server:
        stress.start(b, "run-b", "tiny")
    assert str(server.value) == BUSY_SERVER
    assert stress.running(a) is busy and stress.running(b) is None


def test_the_users_texts_are_limited_and_checked():
    assert parse_texts("  a tiny monkey \n\n a tiny monkey\nmarmoset ") == ["a tiny monkey", "marmoset"]
    assert parse_texts("") == [] and parse_texts(None) == []
    with pytest.raises(DataError, match="at most"):
        parse_texts("\n".join(f"text {i}" for i in range(MAX_TEXTS + 1)))
    with pytest.raises(DataError, match="characters at most"):
        parse_texts("x" * 201)
    with pytest.raises(DataError, match="must be text"):
        parse_texts(["a list"])


def test_a_presets_subgroup_is_named_only_where_the_gallery_holds_it():
    def view(preset, option=None):
        return SimpleNamespace(spec=SimpleNamespace(source={"preset": preset, "option": option}))

    demo = ["/d/monkeys10/val/pygmy_marmoset/1.jpg", "/d/monkeys10/val/silvery_marmoset/2.jpg",
            "/d/monkeys10/val/bald_uakari/3.jpg", "/d/cifar10/test/ship/4.jpg"]
    assert subgroup_parts(view("monkeys"), demo) == ["monkeys10/val/pygmy_marmoset/",
                                                     "monkeys10/val/silvery_marmoset/"]
    assert subgroup_parts(view("cifar10-class", "ship"), demo) == ["cifar10/test/ship/"]
    assert subgroup_parts(view("cifar10-class", "cat"), demo) == []  # not in this gallery: the run's own photos
    assert subgroup_parts(view("monkeys"), ["/g/airplane/1.jpg"]) == []
    assert subgroup_parts(view("style", "sketch"), demo) == []  # no held-out photos of it in the galleries
    assert subgroup_parts(SimpleNamespace(spec=SimpleNamespace(source={"upload": "u1"})), demo) == []


def test_the_result_is_shown_in_words_with_every_text_escaped():
    evil = "<img src=x onerror=alert(1)>"
    result = {"alpha": 0.6, "k": 20, "subgroup_images": 7, "subgroup_source": "gallery", "gallery": evil,
              "seconds": 3.2, "weight_distance": 0.01,
              "verdicts": [{"test": "other names", "verdict": "partly", "numbers": f'worst: "{evil}" finds 5'},
                           {"test": "unseen photos", "verdict": "subgroup forgotten", "numbers": "0.9 / 0.9"}],
              "names": {"texts": [{"text": evil, "name": "x", "family": "user", "before": 12, "after": 5}],
                        "families": ["user"]}}
    html = stress_html(result, evil)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    for test in ("other names", "relearning", "unseen photos"):  # relearning shown as not run
        assert f"<b>{test}</b>" in html
    assert "not run" in html and "12 → <b>5</b>" in html and "✔" in html and "⚠" in html
    assert "No stress test" in stress_html({})
    undefined = {**result, "verdicts": [{"test": "unseen photos", "verdict": "not: the pictures, not the subgroup",
                                         "numbers": "forgotten nan of the trained photos, nan of 8 held-out photos"}]}
    assert "untested: the original model did not recognise" in stress_html(undefined)


def test_a_finished_job_frees_the_workspace(service):
    owner = service.workspaces.new_id()
    job = StressJob(owner, "r")
    service.stress._jobs[owner] = job
    assert service.stress.running(owner) is job
    job.progress("relearning", 0.5, "step 25")
    assert job.fraction == pytest.approx(0.7)
    done = threading.Event()
    job.done = done
    done.set()
    assert service.stress.running(owner) is None
    service.stress._jobs.pop(owner)


def test_the_page_handler_shows_progress_then_the_verdicts_and_refuses_a_second_with_a_message():
    """The tab's callback through the app's error wrapper, on stand-in services: a moving bar while the job works,
    the verdict table at the end, a short message (no traceback, no path) for a refused start."""
    import gradio as gr

    from clipforget.app.messages import Scrubber
    from clipforget.app.ui.handlers import Handlers

    job = StressJob("me", "r1")
    started = []

    def start(owner, run_id, gallery, relearning, texts):
        if started:
            raise DataError(BUSY_SERVER)
        started.append((owner, run_id, gallery, relearning, texts))
        return job

    services = SimpleNamespace(
        tokens=SimpleNamespace(owner=lambda headers, cookies: "me"), workspaces=SimpleNamespace(touch=lambda o: None),
        galleries=SimpleNamespace(sources=lambda name: []), runs=SimpleNamespace(open=lambda o, r: SimpleNamespace(
            title="<i>my run</i>")), stress=SimpleNamespace(start=start), scrub=Scrubber())
    h = Handlers(services)
    run = h.errors(h.stress_run)
    request = SimpleNamespace(headers={}, cookies={})
    steps = run("r1", "tiny", False, "a <b>tiny</b> monkey", request, progress=lambda *a, **k: None)
    job.progress("stress", 0.35, "other names: sweeping")
    bar, _ = next(steps)
    assert "<progress" in bar and "35%" in bar and "other names: sweeping" in bar
    job.result = {"k": 20, "alpha": 0.5, "verdicts": [{"test": "other names", "verdict": "forgotten", "numbers": ""},
                                                      {"test": "unseen photos", "verdict": "not", "numbers": ""}],
                  "names": {"texts": []}}
    job.done.set()
    status, shown = next(steps)
    assert status == "" and "cf-stress-verdicts" in shown and "&lt;i&gt;my run&lt;/i&gt;" in shown
    assert started == [("me", "r1", "tiny", False, ["a <b>tiny</b> monkey"])]
    with pytest.raises(gr.Error) as refused:
        next(run("r1", "tiny", True, "", request, progress=lambda *a, **k: None))
    assert refused.value.message == BUSY_SERVER
    with pytest.raises(gr.Error, match="open a run"):
        next(run("", "tiny", True, "", request, progress=lambda *a, **k: None))
