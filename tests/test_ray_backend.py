"""The Ray backend on a local Ray cluster (``ray.init`` here, this machine's CPUs): a quick run end to end through
the app's API, and a Ray Data index build that equals the single-process build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_backends import tiny_folders
from test_index_builder import make_gallery
from test_service import model_spec

from clipforget.app.config import AppConfig
from clipforget.app.service import AppServices
from clipforget.retrieval.index import load_index
from index_builder.__main__ import main as index_cli
from index_builder.build import BuildConfig, build

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_service(tmp_path_factory):
    """The app on the ``ray`` backend; the backend starts a local Ray cluster and shuts it down on close."""
    tmp = tmp_path_factory.mktemp("ray")
    folders = tiny_folders(tmp / "data")
    config = AppConfig(model=model_spec(), cache_dir=str(tmp / "cache"), galleries={"tiny": str(folders["gallery"])},
                       default_gallery="tiny", top_k=5, backend="ray", ray_address=None)
    service = AppServices.create(config)
    yield service, folders
    service.runs.backend.close()
    assert not ray.is_initialized()


def test_quick_run_through_the_app_on_ray(ray_service):
    service, folders = ray_service
    owner = service.workspaces.new_id()
    options = {"forget_dir": str(folders["forget"]), "retain_dir": str(folders["retain"]), "label": "airplane"}
    first = service.runs.start(owner, "on ray", "folders", options, profile="quick")
    assert first["backend"] == "ray" and first["state"] in ("queued", "running")
    job = service.runs.backend.wait(first["id"], timeout=900)
    assert job["state"] == "done", job.get("error")
    assert job["backend"] == "ray" and "ray actor" in job["worker"] and job["device"].startswith("cpu")
    listed = service.runs.list_runs(owner)
    assert listed[0]["id"] == first["id"] and listed[0]["state"] == "done" and "ray actor" in listed[0]["where"]
    view = service.runs.open(owner, first["id"])  # written by the actor, read by the app
    assert view.has_grid("tiny") and view.retrieve("airplane", 1.0, "tiny")["after"]
    assert ray.util.list_named_actors() == []  # the run's actor is gone once it finished


def test_ray_data_build_equals_the_single_process_build(ray_service, tmp_path):
    gallery = make_gallery(tmp_path / "gallery", per_class=5)
    (gallery / "cat" / "garbage.jpg").write_bytes(b"not a jpeg at all")
    (gallery / "readme.md").write_text("x")
    spec = model_spec()
    single = load_index(build([gallery], tmp_path / "single", BuildConfig(model=spec, workers=0, progress=False,
                                                                          batch_size=4)))
    assert index_cli(["build", "--engine", "ray", "--model", spec, "--gallery", str(gallery), "--out",
                      str(tmp_path / "ray"), "--batch-size", "4", "--ray-workers", "2"]) == 0
    sharded = load_index(tmp_path / "ray")
    assert sharded.paths == single.paths and sharded.labels == single.labels  # same ids, same order
    np.testing.assert_allclose(sharded.embeddings.astype(np.float32), single.embeddings.astype(np.float32),
                               atol=2e-3)  # float16 storage
    assert [s["path"] for s in sharded.skipped] == [s["path"] for s in single.skipped]
    info = json.loads((tmp_path / "ray" / "info.json").read_text())
    assert info["build"]["engine"] == "ray-data" and info["build"]["workers"] == 2
    assert info["model"] == single.info["model"] and info["image_size"] == single.info["image_size"]
    assert info["index_key"] == single.info["index_key"] and info["count"] == len(single)
    assert Path(info["galleries"][0]) == gallery.resolve()


def test_a_new_backend_reattaches_to_a_running_ray_actor(ray_service, tmp_path):
    """A restarted app finds the detached ``run-<id>`` actor by name and follows (and controls) its run."""
    from test_backends import PLUGIN, gated_options

    from clipforget.jobs.ray_backend import RayBackend
    from clipforget.jobs.spec import RunSpec

    service, folders = ray_service
    runs_dir = service.runs.runs_dir
    first = RayBackend(runs_dir=runs_dir, cache_dir=service.cache, plugins=[PLUGIN])
    gate = tmp_path / "gate"
    spec = RunSpec(RunSpec.new_id("reattach"), "o", "reattach", model_spec(), "gated", gated_options(folders, gate),
                   "quick")
    first.submit(spec, runs_dir / spec.run_id)
    second = RayBackend(runs_dir=runs_dir, cache_dir=service.cache)  # "the restarted app": nothing in memory
    assert spec.run_id in second._runs
    gate.touch()
    snap = second.wait(spec.run_id, timeout=900)
    assert snap["state"] == "done", snap.get("error")
    assert "ray actor" in snap["worker"]
    for backend in (first, second):
        backend.close()
