"""BatchNorm folding (clipforget.models.fold): exact in float32, names kept, refused where it would be wrong."""

from __future__ import annotations

import torch
from conftest import TEST_MODEL
from torch import nn

from clipforget.models.encode import CPU_CHUNK, in_chunks
from clipforget.models.factory import create_model, new_model
from clipforget.models.fold import checked_fold, fold_batchnorm, probe_input


def _bn_count(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def _trained_stats(module: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def test_folding_the_test_tower_is_exact_in_float32_and_keeps_every_stage_name():
    bundle = new_model(TEST_MODEL)
    visual = bundle.model.visual.eval()
    _trained_stats(visual)
    folded = fold_batchnorm(visual)
    assert _bn_count(visual) > 0 and _bn_count(folded) == 0
    assert all(not p.requires_grad for p in folded.parameters()) and not folded.training
    assert [name for name, _ in folded.named_modules()] == [name for name, _ in visual.named_modules()]
    x = probe_input(bundle.example_input(4))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), visual(x), rtol=1e-4, atol=1e-5)
    assert _bn_count(visual) > 0  # the tower itself is untouched
    assert checked_fold(visual, x) is not None


def test_the_default_tower_folds_every_batchnorm_and_computes_the_same_embeddings():
    bundle = create_model("embedded")  # timm's BatchNormAct2d keeps its activation
    visual = bundle.model.visual.eval()
    x = probe_input(bundle.example_input(2))
    folded = checked_fold(visual, x)
    assert folded is not None and _bn_count(folded) == 0 < _bn_count(visual)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), visual(x), rtol=1e-4, atol=1e-5)


class _NormAfterActivation(nn.Module):
    """Registers conv then norm, but applies an activation between them: folding by registration order is wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.norm(torch.relu(self.conv(x)))


def test_a_tower_whose_norm_does_not_follow_its_convolution_is_not_folded():
    tower = _NormAfterActivation().eval()
    _trained_stats(tower)
    assert _bn_count(fold_batchnorm(tower)) == 0  # registration order alone would fold it ...
    assert checked_fold(tower, torch.randn(2, 3, 8, 8)) is None  # ... and the check on a probe refuses it
    assert checked_fold(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), torch.randn(1, 3, 4, 4)) is None  # no norms


def test_inference_in_chunks_gives_the_whole_batch_result_in_order():
    bundle = new_model(TEST_MODEL)
    visual = bundle.model.visual.eval()
    x = probe_input(bundle.example_input(CPU_CHUNK * 2 + 5))
    calls: list[int] = []

    def forward(part: torch.Tensor) -> torch.Tensor:
        calls.append(len(part))
        return visual(part)

    with torch.no_grad():
        whole = visual(x)
        chunked = in_chunks(forward, x)
    assert calls == [CPU_CHUNK, CPU_CHUNK, 5]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    calls.clear()
    in_chunks(forward, x)  # gradients on: one call, so batch statistics of a training tower stay whole-batch
    assert calls == [len(x)]
