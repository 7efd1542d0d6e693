"""Each baseline moves the embedded model the way it is meant to (small real fixture); the original stays intact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from clipforget.core.progress import no_progress
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.data.task import UnlearningTask
from clipforget.methods.baselines.clip_lip import CLIPLipConfig
from clipforget.methods.baselines.emmn import EMMNConfig
from clipforget.methods.baselines.fisher import FisherConfig
from clipforget.methods.baselines.ft import FTConfig
from clipforget.methods.baselines.ga import GAConfig
from clipforget.methods.baselines.lip import LIPConfig, lipschitz_loss
from clipforget.methods.baselines.nullspace import NullspaceConfig
from clipforget.methods.baselines.slug import SLUGConfig, pareto_front
from clipforget.methods.registry import available_methods, get_method
from clipforget.models.encode import encode_images, image_features, logits, text_classifier
from clipforget.models.layers import VisualOnly
from clipforget.models.weights import changed_keys as changed_keys
from clipforget.models.weights import clone_state

BASELINES = ("ft", "ga", "fisher", "lip", "emmn", "clip_lip", "slug", "nullspace")


@pytest.fixture(scope="module")
def task(bundle, has_data) -> UnlearningTask:
    """32 airplanes to forget, 32 images of four other classes to keep (CIFAR-10 train), 10-class vocabulary."""
    size = bundle.image_size
    forget = cifar10("train", size, ("airplane",), 32, 0, None, 0)
    retain = cifar10("train", size, ("automobile", "bird", "cat", "ship"), 8, 0, None, 0)
    cal_f = cifar10("train", size, ("airplane",), 16, 32, None, 0)
    cal_r = cifar10("train", size, ("automobile", "bird", "cat", "ship"), 4, 8, None, 0)
    return UnlearningTask(forget, retain, list(CIFAR10_CLASSES), cal_f, cal_r, name="airplane-small")


def _visual(bundle, state):
    visual = copy.deepcopy(bundle.model.visual)
    visual.load_state_dict(state)
    return visual.eval()


@torch.no_grad()
def _ce(bundle, task, images, visual=None) -> float:
    classifier = text_classifier(bundle, task.classnames)
    model = VisualOnly(visual) if visual is not None else None
    feats = image_features(bundle, images.images, model)
    return float(F.cross_entropy(logits(bundle, feats, classifier), task.label_ids(images)))


def _run(bundle, task, name, cfg):
    before = clone_state(bundle.model)
    out = get_method(name).fn(bundle, task, cfg, no_progress)
    after = bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed bundle.model in place"
    return out


def test_all_baselines_are_registered():
    assert set(BASELINES) <= set(available_methods())
    for name in BASELINES:
        assert get_method(name).description


def test_ft_lowers_retain_loss(bundle, task):
    out = _run(bundle, task, "ft", FTConfig(max_steps=6, epochs=10, batch_size=16, lr=1e-4))
    assert _ce(bundle, task, task.retain, _visual(bundle, out.visual_state)) < _ce(bundle, task, task.retain) - 0.05
    assert len(out.log["losses"]) == 6  # 10 epochs of 2 batches, capped at max_steps


def test_ga_raises_forget_loss(bundle, task):
    out = _run(bundle, task, "ga", GAConfig(max_steps=4, lr=1e-4))
    assert _ce(bundle, task, task.forget, _visual(bundle, out.visual_state)) > _ce(bundle, task, task.forget) + 0.1


def test_emmn_raises_forget_loss_and_keeps_retain(bundle, task):
    cfg = EMMNConfig(max_steps=4, lr=1e-4)
    emmn = _visual(bundle, _run(bundle, task, "emmn", cfg).visual_state)
    ga = _visual(bundle, _run(bundle, task, "ga", GAConfig(max_steps=4, lr=1e-4)).visual_state)
    forget_0, retain_0 = _ce(bundle, task, task.forget), _ce(bundle, task, task.retain)
    assert _ce(bundle, task, task.forget, emmn) > forget_0 + 0.1
    # the retain term holds the retain loss far below where pure ascent with the same budget pushes it
    assert _ce(bundle, task, task.retain, emmn) < _ce(bundle, task, task.retain, ga)
    assert _ce(bundle, task, task.retain, emmn) < retain_0 + 0.5


def test_fisher_noise_scales_with_its_factor(bundle, task):
    theta_0 = clone_state(bundle.model.visual)
    deltas = {}
    for factor in (0.0, 0.2, 0.8):
        state = _run(bundle, task, "fisher", FisherConfig(variance_factor=factor, fisher_samples=16)).visual_state
        deltas[factor] = torch.cat([(state[k].float() - theta_0[k].float()).flatten() for k in theta_0
                                    if theta_0[k].is_floating_point()])
    assert float(deltas[0.0].abs().max()) == 0.0
    # same seed, same direction: noise grows as sqrt(factor) -> x2 from 0.2 to 0.8
    ratio = float(deltas[0.8].norm() / deltas[0.2].norm())
    assert ratio == pytest.approx(2.0, rel=1e-3)
    assert float(F.cosine_similarity(deltas[0.8], deltas[0.2], dim=0)) > 0.999


def test_lip_lowers_the_lipschitz_loss_on_forget_images(bundle, task):
    out = _run(bundle, task, "lip", LIPConfig(max_steps=4, lr=1e-4, batch_size=8, copies=4))
    classifier = text_classifier(bundle, task.classnames)
    pixels = task.forget.images[:16].float() / 255.0

    def measure(visual):
        torch.manual_seed(123)
        with torch.no_grad():
            return float(lipschitz_loss(bundle, visual, pixels, classifier, copies=4, noise_std=0.1)[0])

    assert measure(_visual(bundle, out.visual_state)) < measure(bundle.model.visual)


def test_clip_lip_updates_only_top_layers_and_forgets_synthetic_samples(bundle, task):
    cfg = CLIPLipConfig(synthetic=8, synthetic_retain_per_class=1, synth_steps=10, max_steps=4, top_layers=3,
                        lr=1e-3, batch_size=8, copies=2)
    out = _run(bundle, task, "clip_lip", cfg)
    changed = changed_keys(out.visual_state, clone_state(bundle.model.visual))
    assert 0 < len(changed) <= 3
    assert set(changed) <= set(out.log["layers"])
    accs = [row["synthetic_forget_acc"] for row in out.log["losses"]]
    assert accs[-1] <= accs[0]


def test_pareto_front_keeps_only_undominated_layers():
    points = {"a": (3.0, 0.9), "b": (2.0, 0.1), "c": (1.0, 0.5), "d": (3.0, 0.95)}
    assert pareto_front(points) == ["a", "b"]


def test_slug_changes_one_layer_from_the_pareto_front(bundle, task):
    cfg = SLUGConfig(gradient_samples=16, step_sizes=[0.1, 0.5], max_layers=2, calibration_images=16)
    out = _run(bundle, task, "slug", cfg)
    changed = changed_keys(out.visual_state, clone_state(bundle.model.visual))
    assert len(changed) == 1
    assert changed[0] in [row["layer"] for row in out.log["pareto_front"]]
    chosen = out.log["chosen"]
    assert chosen["forget_acc"] <= out.log["calibration_original"]["forget_acc"]


def test_nullspace_removes_the_target_text_direction(bundle, task):
    classifier = text_classifier(bundle, task.classnames)
    target = task.classnames.index("airplane")
    before = encode_images(bundle, task.forget.images)
    out = _run(bundle, task, "nullspace", NullspaceConfig())
    after = encode_images(bundle, task.forget.images, model=VisualOnly(_visual(bundle, out.visual_state)))
    assert float((before @ classifier[target]).abs().mean()) > 0.01
    assert float((after @ classifier[target]).abs().max()) < 1e-2
    assert changed_keys(out.visual_state, clone_state(bundle.model.visual)) == [
        k for k in bundle.model.visual.state_dict() if k.startswith(out.log["edited"])]
