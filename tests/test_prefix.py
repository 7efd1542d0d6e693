"""Prefix activations: for every tower type, the suffix run on cached prefix activations equals the full forward."""

from __future__ import annotations

import pytest
import torch

from clipforget.data.task import EvalSet
from clipforget.methods.ours import ThreeStageConfig
from clipforget.models.factory import create_model
from clipforget.models.layers import adaptable_layers
from clipforget.models.prefix import PrefixCache, plan_cut, prefix_activations, suffix_tower
from clipforget.pipeline.run import run_method
from clipforget.settings.cifar10 import Cifar10Sizes, cifar10_class_task
from clipforget.stages.forget import ForgetConfig
from clipforget.stages.remind import RemindConfig
from clipforget.stages.restore import RestoreConfig


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


def test_prefix_cache_encodes_in_small_inference_chunks_and_keeps_no_pixels_alive() -> None:
    """Even when the caller has gradients on, the frozen prefix runs as inference, CPU_CHUNK images per call (a whole
    batch with autograd on held hundreds of MB of activations at 144 px and ran twice as slowly); the cache holds its
    activations but not the pixels they came from."""
    import gc
    import weakref

    from clipforget.models.encode import CPU_CHUNK

    bundle = create_model("embedded-cifar")
    x = bundle.normalize(torch.zeros((2, 3, bundle.image_size, bundle.image_size), dtype=torch.uint8))
    cut = plan_cut(bundle.model.visual, x, _last_third(bundle.model.visual.eval(), x))
    cache = PrefixCache(bundle, cut, batch_size=4 * CPU_CHUNK)
    first_stage = cache._prefix.get_submodule(cut.stages[0])
    calls: list[int] = []
    hook = first_stage.register_forward_hook(lambda module, args, out: calls.append(int(args[0].shape[0])))
    images = torch.randint(0, 256, (3 * CPU_CHUNK + 5, 3, bundle.image_size, bundle.image_size), dtype=torch.uint8)
    with torch.enable_grad():
        out = cache.activations(images)
    hook.remove()
    assert len(out) == len(images) and not out.requires_grad
    assert max(calls) <= CPU_CHUNK and sum(calls) == len(images)
    pixels = weakref.ref(images)
    del images
    gc.collect()
    assert pixels() is None, "the prefix cache kept the pixels alive"
    assert cache.cached_bytes == out.numel() * out.element_size()


def test_run_sends_every_image_once_through_the_prefix_and_none_through_the_full_tower(bundle, has_data,
                                                                                       tmp_path) -> None:
    """Every image of a run (task sets and every evaluation set, the original model's evaluation included) passes
    the frozen layers once, inside the prefix cache; an evaluation set that bypassed the cache would go through the
    tower's first stage again and break the count."""
    sizes = Cifar10Sizes(forget=20, retain_per_class=4, calibration_forget=8, calibration_retain_per_class=2,
                         eval_per_class=6, reference_tiny_per_class=0)
    task, eval_sets = cifar10_class_task(bundle.image_size, seed=0, sizes=sizes, forget_class="airplane")
    eval_sets.append(EvalSet("cifar10_again", eval_sets[1].images.subset(range(12)), eval_sets[1].classnames,
                             "retain"))  # a second set of other tensors: it must be encoded too
    cfg = ThreeStageConfig(forget=ForgetConfig(steps=2, fisher_samples=8),
                           remind=RemindConfig(align_images=8, align_batch=8, align_steps=1, steps=2),
                           restore=RestoreConfig(alphas=[0.0, 1.0]))
    first_stage = bundle.model.visual.get_submodule(
        plan_cut(bundle.model.visual, bundle.example_input(), bundle.tower_layers()[-3:]).stages[0])
    seen: list[int] = []
    hook = first_stage.register_forward_hook(lambda module, args, out: seen.append(int(args[0].shape[0])))
    try:
        result = run_method(bundle, task, tmp_path / "run", "ours", cfg, eval_sets, cache_original=False)
    finally:
        hook.remove()
    assert result.prefixed is not None
    images = sum(len(s) for s in (task.forget, task.retain, task.calibration_forget, task.calibration_retain,
                                  task.reference) if s is not None) + sum(len(s.images) for s in eval_sets)
    assert result.prefixed.cache.images_encoded == images
    probes = sum(n for n in seen if n <= 2)  # forward-hook probes of the tower on example inputs (2 black images)
    assert sum(seen) - probes == images, "an image went through the full tower outside the prefix cache"
    result.prefixed.release()


def test_a_run_handed_its_inputs_frees_their_pixels(bundle, has_data, tmp_path) -> None:
    """``keep_pixels=False`` (the CLI and the app's worker): once encoded, the task's and evaluation sets' pixels are
    replaced by their activations, so nothing keeps the 144 px images of a run alive (10,000 CIFAR-10 test images are
    622 MB); ``keep_pixels=True`` (the benchmark reuses its sets across runs) leaves them as they were."""
    import gc
    import weakref

    sizes = Cifar10Sizes(forget=20, retain_per_class=4, calibration_forget=8, calibration_retain_per_class=2,
                         eval_per_class=6, reference_tiny_per_class=0)
    cfg = ThreeStageConfig(forget=ForgetConfig(steps=2, fisher_samples=8),
                           remind=RemindConfig(align_images=8, align_batch=8, align_steps=1, steps=2),
                           restore=RestoreConfig(alphas=[0.0, 1.0]))
    for keep in (True, False):
        task, eval_sets = cifar10_class_task(bundle.image_size, seed=0, sizes=sizes, forget_class="airplane")
        parts = [task.forget, task.retain, task.calibration_forget, task.calibration_retain] + \
            [s.images for s in eval_sets]
        pixels = [weakref.ref(p.images) for p in parts]
        lengths = [len(p) for p in parts]
        del parts
        result = run_method(bundle, task, tmp_path / f"run-{keep}", "ours", cfg, eval_sets, cache_original=False,
                            keep_pixels=keep)
        result.prefixed.release()
        del result
        gc.collect()
        now = [task.forget, task.retain, task.calibration_forget, task.calibration_retain] + \
            [s.images for s in eval_sets]
        assert [len(p) for p in now] == lengths
        if keep:
            assert all(p.images.dtype == torch.uint8 for p in now)
            assert all(ref() is p.images for ref, p in zip(pixels, now, strict=True))
        else:
            assert all(p.images.dtype == torch.float16 for p in now)
            assert all(ref() is None for ref in pixels), "a run handed its inputs still keeps their pixels"
