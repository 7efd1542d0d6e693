"""What the remind stage's pixel-space alignment does at the prefix cut, against activation-space alignment (D11).

On ``monkeys`` small (seed 0, 128 images of the retain pool): the shift of the activations entering the suffix (in
channel standard deviations), the suffix's BatchNorm mismatch, and the cosine of the suffix's embeddings to those of
the pixel-aligned images, for several ``activation_epsilon`` values.

    CLIPFORGET_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/diag_remind_alignment.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from clipforget.core.devices import configure_backends, resolve_device
from clipforget.methods.registry import get_method
from clipforget.models.encode import tower_features
from clipforget.models.factory import DEFAULT_MODEL, create_model
from clipforget.pipeline.prefixed import PrefixedRun
from clipforget.settings import get_setting
from clipforget.stages.remind import BNStatistics, RemindConfig, align_to_bn_statistics

VARIANTS = [(0.1, 20), (0.25, 20), (0.5, 20), (1.0, 20), (0.25, 5)]  # (activation_epsilon, align_steps)


def main() -> None:
    torch.set_num_threads(1)
    device = resolve_device("cpu")
    configure_backends(device)
    bundle = create_model(DEFAULT_MODEL, device=device)
    task, _ = get_setting("monkeys").build(bundle.image_size, 0, "small")
    spec = get_method("ours")
    prefixed = PrefixedRun.plan(bundle, spec, spec.config_cls())
    assert prefixed is not None
    cache, suffix = prefixed.cache, prefixed.bundle.model.visual.eval()
    pool = task.retain.images[torch.as_tensor(np.random.default_rng(0).permutation(len(task.retain))[:128])]
    start = time.perf_counter()
    pixels, _ = align_to_bn_statistics(bundle, bundle.model.visual, pool, RemindConfig())
    pixel_seconds = time.perf_counter() - start
    h0, hp = cache.activations(pool).float(), cache.activations(pixels).float()
    dims = [0, 2, 3]
    std = h0.std(dim=dims, keepdim=True)

    def mismatch(h: torch.Tensor) -> float:
        stats = BNStatistics(suffix)
        with torch.no_grad():
            suffix(h)
        value = float(stats.mismatch())
        stats.close()
        return value

    with torch.no_grad():
        f0, fp = tower_features(prefixed.bundle, suffix, h0), tower_features(prefixed.bundle, suffix, hp)
    shift = ((hp - h0) / std).abs()
    print(f"pixel alignment: {pixel_seconds:.0f} s, mismatch {mismatch(h0):.0f} -> {mismatch(hp):.0f}, "
          f"mean |dh|/std {float(shift.mean()):.2f} (p50 {float(shift.flatten().median()):.2f}), "
          f"channel mean shift {float(((hp.mean(dims) - h0.mean(dims)).abs() / std.flatten()).mean()):.2f} std, "
          f"std ratio {float((hp.std(dim=dims) / h0.std(dim=dims)).mean()):.2f}, "
          f"cos(f aligned, f unaligned) {float((fp * f0).sum(-1).mean()):.2f}")
    for epsilon, steps in VARIANTS:
        start = time.perf_counter()
        ha, _ = align_to_bn_statistics(prefixed.bundle, suffix, cache.activations(pool),
                                       RemindConfig(activation_epsilon=epsilon, align_steps=steps))
        seconds = time.perf_counter() - start
        ha = ha.float()
        with torch.no_grad():
            fa = tower_features(prefixed.bundle, suffix, ha)
        print(f"activation epsilon {epsilon} steps {steps}: {seconds:.0f} s, mismatch {mismatch(ha):.0f}, "
              f"mean |dh|/std {float(((ha - h0) / std).abs().mean()):.2f}, "
              f"cos(f, f pixel-aligned) {float((fa * fp).sum(-1).mean()):.2f}, "
              f"cos(f, f unaligned) {float((fa * f0).sum(-1).mean()):.2f}")


if __name__ == "__main__":
    main()
