"""A quick end-to-end run of the three-stage method on small real data: it must forget, and keep the rest."""

import json
import os
import shutil

import pytest

from clipforget.app.explore import RunView
from clipforget.core.errors import ModelLoadError
from clipforget.methods.ours import ThreeStageConfig
from clipforget.models.factory import load_checkpoint, weights_digest
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.run import run_method
from clipforget.settings.cifar10 import Cifar10Sizes, cifar10_class_task
from clipforget.stages.forget import ForgetConfig
from clipforget.stages.remind import RemindConfig
from clipforget.stages.restore import RestoreConfig


@pytest.fixture(scope="module")
def quick_run(bundle, has_data, tmp_path_factory):
    sizes = Cifar10Sizes(forget=120, retain_per_class=24, calibration_forget=40, calibration_retain_per_class=10,
                         eval_per_class=60)
    task, eval_sets = cifar10_class_task(bundle.image_size, seed=0, sizes=sizes, forget_class="airplane")
    cfg = ThreeStageConfig(
        forget=ForgetConfig(steps=30, fisher_samples=48),
        remind=RemindConfig(align_images=96, align_batch=48, align_steps=8, steps=10, ema_decay=0.6),  # 0.6**10 ~ 0.6 %
        restore=RestoreConfig(alphas=[0.0, 0.25, 0.5, 0.75, 1.0]),
    )
    out = tmp_path_factory.mktemp("run")
    return run_method(bundle, task, out, "ours", cfg, eval_sets)


def test_quick_run_forgets_target_and_keeps_the_rest(quick_run):
    zs = quick_run.metrics["zero_shot"]
    assert zs["cifar10_target"]["acc_original"] > 0.5
    assert zs["cifar10_target"]["ratio"] < 0.3, zs
    assert zs["cifar10_retain"]["ratio"] > 0.8, zs
    assert 0.0 < quick_run.metrics["alpha"] <= 1.0
    # forgot and kept: no warning about either side (small sets may still be named)
    assert not [w for w in quick_run.metrics["warnings"] if "forgotten" in w or "took" in w], quick_run.metrics


def test_run_folder_is_complete_and_loadable(quick_run, bundle):
    out = quick_run.out_dir
    for name in ("config.json", "metrics.json", "alpha_curve.json", "layer_ranking.json", "status.json"):
        assert (out / name).is_file(), name
    assert RunFolder(out).is_done()
    curve = json.loads((out / "alpha_curve.json").read_text())
    assert [row["alpha"] for row in curve["curve"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    ranking = json.loads((out / "layer_ranking.json").read_text())
    assert ranking == sorted(ranking, key=lambda r: -r["relative"])
    model = RunFolder(out).load_model()
    assert model.image_size == bundle.image_size
    load_checkpoint(out / "unlearned")
    # the original model was left untouched by the run
    assert quick_run.metrics["zero_shot"]["cifar10_target"]["acc_original"] > 0.5


def test_interrupted_run_is_not_loadable(quick_run, tmp_path):
    fake = tmp_path / "killed"
    fake.mkdir()
    (fake / "status.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345}))
    assert RunFolder(fake).state == "interrupted"
    assert "stopped before it finished" in RunFolder(fake).status()["error"]
    with pytest.raises(ModelLoadError, match="not finished"):
        RunFolder(fake).load_model()
    # an in-progress run by a live process reads as running
    (fake / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    assert RunFolder(fake).state == "running"


def test_run_made_on_other_weights_of_its_model_is_refused(quick_run, bundle, tmp_path):
    """A bundled name rebuilt with new weights must not pair a run's soup with an original it was not made from."""
    config = json.loads((quick_run.out_dir / "config.json").read_text())
    assert config["model_weights"] == weights_digest(bundle.spec)
    folder = RunFolder(quick_run.out_dir)
    assert not folder.base_weights_changed()
    assert folder.differences("embedded", ThreeStageConfig())[0] == "model"

    moved = tmp_path / "old-run"
    shutil.copytree(quick_run.out_dir, moved)
    config["model_weights"] = "0123456789abcdef"  # made on an earlier build of the same name
    (moved / "config.json").write_text(json.dumps(config))
    old = RunFolder(moved)
    assert old.base_weights_changed()
    assert old.differences(bundle.spec, ThreeStageConfig())[0] == "model_weights"
    with pytest.raises(ModelLoadError, match="other weights"):
        old.original_model()
    with pytest.raises(ModelLoadError, match="run it again"):
        RunView(old, models=None, galleries=None, config=None)  # the app's opened run: refused before any loading
