from dataclasses import replace

import pytest
import torch
from torch import nn

from clipforget.stages.remind import (
    BNStatistics,
    RemindConfig,
    align_to_bn_statistics,
    bn_mismatch,
    ema_update,
)


def test_alignment_lowers_bn_mismatch_within_epsilon(bundle, cifar_small):
    images = cifar_small.images[torch.randperm(len(cifar_small), generator=torch.Generator().manual_seed(0))[:64]]
    visual = bundle.model.visual
    cfg = RemindConfig(align_batch=32, align_steps=15, epsilon=16 / 255)
    before = bn_mismatch(bundle, visual, images)
    seen = []
    aligned, log = align_to_bn_statistics(bundle, visual, images, cfg, progress=lambda *a: seen.append(a))
    # the bar moves with each batch, not once at the end
    assert [(f, m.split(": ")[-1]) for _, f, m in seen] == [(0.25, "32/64 images"), (0.5, "64/64 images")]
    after = bn_mismatch(bundle, visual, aligned)
    assert log["aligned"] is True
    assert after < 0.8 * before
    assert (aligned.int() - images.int()).abs().max() <= round(16 / 255 * 255) + 1
    # the original model is not modified by alignment
    assert all(not p.requires_grad or p.grad is None for p in visual.parameters())


def test_micro_batches_back_propagate_the_whole_batch_gradient(bundle, cifar_small):
    """A batch too large for one backward pass (RN50 at 224 px) is aligned a slice at a time with the same
    statistics and the same gradient as one pass."""
    visual = bundle.model.visual.eval()
    x = bundle.input_space.to_float(cifar_small.images[:20], bundle.device)
    noise = 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    flags = [p.requires_grad for p in visual.parameters()]
    for p in visual.parameters():
        p.requires_grad_(False)
    results = []
    try:
        for bounds in ([(0, 20)], [(0, 7), (7, 14), (14, 20)]):
            delta = noise.clone().requires_grad_()
            stats = BNStatistics(visual)

            def forward(a: int, b: int, delta=delta) -> None:
                visual(bundle.input_space.tower_input(x[a:b] + delta[a:b]))

            if len(bounds) == 1:
                forward(0, 20)
                loss = stats.mismatch()
                value = float(loss.detach())
                loss.backward()
            else:
                value = stats.gather(forward, bounds)
                stats.backward_in_slices(forward, bounds)
            stats.close()
            results.append((value, delta.grad))
    finally:
        for p, flag in zip(visual.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    (whole, g_whole), (sliced, g_sliced) = results
    assert sliced == pytest.approx(whole, rel=1e-4)
    assert g_whole.abs().max() > 0
    assert (g_sliced - g_whole).abs().max() <= 1e-3 * g_whole.abs().max()


def test_alignment_in_micro_batches_matches_one_pass(bundle, cifar_small):
    images = cifar_small.images[:32]
    visual = bundle.model.visual
    one_pass = RemindConfig(align_batch=32, align_micro_batch=32, align_steps=4)
    whole, log_whole = align_to_bn_statistics(bundle, visual, images, one_pass)
    sliced, log_sliced = align_to_bn_statistics(bundle, visual, images, replace(one_pass, align_micro_batch=6))
    assert (whole != images).any()
    # Adam's normalised step turns float rounding of near-zero gradients into whole steps on a few pixels
    assert ((whole.int() - sliced.int()).abs() > 1).float().mean() < 0.02
    assert log_sliced["mismatch_after"] == pytest.approx(log_whole["mismatch_after"], rel=1e-3)
    assert log_sliced["mismatch_after"] < log_sliced["mismatch_before"]


def test_alignment_skipped_without_batchnorm(bundle):
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    out, log = align_to_bn_statistics(bundle, no_bn, images, RemindConfig())
    assert torch.equal(out, images)
    assert log["aligned"] is False and "no BatchNorm" in log["reason"]


def test_ema_moves_from_original_towards_trained():
    ema = {"w": torch.zeros(3), "n": torch.tensor(5)}
    current = {"w": torch.ones(3), "n": torch.tensor(9)}
    ema_update(ema, current, decay=0.9)
    assert torch.allclose(ema["w"], torch.full((3,), 0.1))
    ema_update(ema, current, decay=0.9)
    assert torch.allclose(ema["w"], torch.full((3,), 0.19))
    assert int(ema["n"]) == 5  # integer buffers are not averaged


def test_embedding_distillation_keeps_retain_embeddings_closer_to_the_original(bundle, has_data):
    from clipforget.models.encode import encode_images
    from clipforget.models.layers import VisualOnly
    from clipforget.settings.cifar10 import Cifar10Sizes, cifar10_class_task
    from clipforget.stages.forget import ForgetConfig, forget
    from clipforget.stages.remind import remind

    sizes = Cifar10Sizes(forget=64, retain_per_class=12, calibration_forget=8, calibration_retain_per_class=6,
                         eval_per_class=2, reference_tiny_per_class=0)
    task, _ = cifar10_class_task(bundle.image_size, seed=0, sizes=sizes, forget_class="cat")
    # a forget stage that moves retain embeddings (any layer, no anchor), so there is something to distil back
    drifting = ForgetConfig(steps=6, lr=1e-3, fisher_samples=32, stop_prob=0.0, candidate_share=1.0, anchor_weight=0.0)
    forgotten, _, log = forget(bundle, task, drifting)
    held_out = task.calibration_retain.images
    original = encode_images(bundle, held_out)

    def similarity(weight: float) -> float:
        cfg = RemindConfig(align=False, align_images=96, steps=8, batch_size=32, ema_decay=0.5,
                           feature_kd_weight=weight)
        student, _ = remind(bundle, forgotten, task, log["lora_layers"], cfg, forget_cfg=drifting)
        return float((encode_images(bundle, held_out, model=VisualOnly(student)) * original).sum(-1).mean())

    with_kd, without = similarity(20.0), similarity(0.0)
    assert with_kd > without + 0.05, (with_kd, without)  # measured 0.96 vs 0.54
