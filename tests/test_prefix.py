"""Prefix activations: for every tower type, the suffix run on cached prefix activations equals the full forward."""

from __future__ import annotations

import pytest
import torch

from clipforget.models.factory import create_model
from clipforget.models.layers import adaptable_layers
from clipforget.models.prefix import PrefixCache, plan_cut, prefix_activations, suffix_tower


def _last_third(visual: torch.nn.Module, x: torch.Tensor) -> list[str]:
    names = adaptable_layers(visual, x)
    return names[len(names) - max(1, round(len(names) * 0.33)):]


def _check_tower(visual: torch.nn.Module, x: torch.Tensor, kind: str) -> None:
    visual.eval()
    cut = plan_cut(visual, x, _last_third(visual, x))
    assert cut is not None and cut.kind == kind and cut.split > 0
    with torch.no_grad():
        expected = visual(x)
        h = prefix_activations(visual, cut, x)
        suffix = suffix_tower(visual, cut).eval()
        got = suffix(h)
    assert float((got - expected).abs().max()) <= 1e-4
    # the suffix holds no prefix weights and keeps the others' names
    full, kept = visual.state_dict(), suffix.state_dict()
    assert set(kept) < set(full)
    assert not any(cut.in_prefix(k) for k in kept)
    assert all(torch.equal(kept[k], full[k]) for k in kept)


@pytest.mark.parametrize("spec, kind", [("embedded", "chain"), ("embedded-cifar", "chain")])
def test_bundled_towers_suffix_equals_full_forward(spec: str, kind: str) -> None:
    bundle = create_model(spec)
    size = bundle.image_size
    images = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    _check_tower(bundle.model.visual, bundle.normalize(images), kind)


def test_open_clip_modified_resnet_suffix_equals_full_forward() -> None:
    from open_clip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    tower = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=32, heads=2, image_size=64, width=16)
    _check_tower(tower, torch.randn(3, 3, 64, 64), "chain")


def test_open_clip_vision_transformer_suffix_equals_full_forward() -> None:
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    tower = VisionTransformer(image_size=32, patch_size=8, width=64, layers=6, heads=4, mlp_ratio=2.0, output_dim=32)
    _check_tower(tower, torch.randn(3, 3, 32, 32), "vit")


def test_layers_in_the_first_stage_leave_nothing_to_cache() -> None:
    bundle = create_model("embedded-cifar")
    x = bundle.normalize(torch.zeros((2, 3, bundle.image_size, bundle.image_size), dtype=torch.uint8))
    names = adaptable_layers(bundle.model.visual.eval(), x)
    assert plan_cut(bundle.model.visual, x, names) is None  # every layer may change
    assert plan_cut(bundle.model.visual, x, None) is None


def test_prefix_cache_encodes_each_set_once_and_round_trips_states() -> None:
    bundle = create_model("embedded-cifar")
    x = bundle.normalize(torch.zeros((2, 3, bundle.image_size, bundle.image_size), dtype=torch.uint8))
    cut = plan_cut(bundle.model.visual, x, _last_third(bundle.model.visual.eval(), x))
    cache = PrefixCache(bundle, cut, batch_size=3)
    images = torch.randint(0, 256, (5, 3, bundle.image_size, bundle.image_size), dtype=torch.uint8)
    first = cache.activations(images)
    assert first.dtype == torch.float16 and len(first) == 5 and cache.images_encoded == 5
    assert cache.activations(images) is first and cache.images_encoded == 5
    full = bundle.visual_state()
    suffix = cache.suffix_state(full)
    assert set(suffix) == set(cache.suffix_bundle.visual_state())
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in suffix.items()}
    merged = cache.full_state(changed)
    assert set(merged) == set(full)
    assert all(torch.equal(merged[k], changed[k]) for k in suffix)
    assert all(torch.equal(merged[k], full[k]) for k in full if k not in suffix)
    cache.release()
    assert cache.cached_bytes == 0
