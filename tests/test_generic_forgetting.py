"""The generic path (issue 19): a subgroup given only by its images and a coarse label -- no forget prompt -- is
gone from retrieval under its own name, its siblings under the same label stay, and an unrelated prompt's top-k
stays (small data, the fast test model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipforget.data.cifar10 import cifar10
from clipforget.data.reference import reference_images
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.methods.ours import ThreeStageConfig
from clipforget.models.encode import encode_images, encode_text
from clipforget.models.layers import VisualOnly
from clipforget.pipeline.run import run_method
from clipforget.stages.forget import ForgetConfig
from clipforget.stages.remind import RemindConfig
from clipforget.stages.restore import RestoreConfig

VEHICLES = ("airplane", "automobile", "ship", "truck")
K = 15


@pytest.fixture(scope="module")
def generic_run(bundle, has_data, tmp_path_factory):
    """Forget CIFAR-10 airplanes as "vehicle", keep cars, ships and trucks as "vehicle"; the method is told no name."""
    size = bundle.image_size
    train = cifar10("train", size, VEHICLES, per_class=100, seed=0)
    labels = np.asarray(train.labels)
    forget = train.where((labels == "airplane").tolist()).relabel("vehicle")
    retain = train.where((labels != "airplane").tolist()).relabel("vehicle")
    cal = cifar10("train", size, VEHICLES, per_class=20, offset=100, seed=0)
    cal_labels = np.asarray(cal.labels)
    task = UnlearningTask(forget, retain, ["vehicle", "animal"], cal.where((cal_labels == "airplane").tolist())
                          .relabel("vehicle"), cal.where((cal_labels != "airplane").tolist()).relabel("vehicle"),
                          name="generic-airplanes-in-vehicles",
                          reference=reference_images(size, 1, 5, 0))  # as the folders setting has (FolderSizes)
    assert task.forget_prompts == ()
    cfg = ThreeStageConfig(
        forget=ForgetConfig(steps=150, lr=1e-2, fisher_samples=48),
        remind=RemindConfig(align_images=96, align_batch=48, align_steps=8, steps=10, ema_decay=0.6),
        restore=RestoreConfig(alphas=[0.0, 0.25, 0.5, 0.75, 1.0]),
    )
    eval_sets = [EvalSet("forget_heldout", task.calibration_forget, task.classnames, "target"),
                 EvalSet("retain_heldout", task.calibration_retain, task.classnames, "retain")]
    result = run_method(bundle, task, tmp_path_factory.mktemp("generic"), "ours", cfg, eval_sets)
    gallery = cifar10("test", size, per_class=30)  # held out: never trained or calibrated on
    with torch.no_grad():
        before = encode_images(bundle, gallery.images)
        after = encode_images(bundle, gallery.images, model=VisualOnly(result.final_visual))
    return result, gallery, before, after


def _top(bundle, feats, prompt: str) -> list[int]:
    query = encode_text(bundle, [prompt]).to(feats.device)
    return (feats @ query.T).squeeze(1).topk(K).indices.tolist()


def _count(gallery, ids, label: str) -> int:
    return sum(gallery.labels[i] == label for i in ids)


def _mean_similarity(bundle, feats, gallery, prompt: str, label: str) -> float:
    query = encode_text(bundle, [prompt]).to(feats.device)
    keep = torch.tensor([x == label for x in gallery.labels])
    return float((feats[keep] @ query.T).mean())


def test_the_subgroup_is_forgotten_under_its_own_name(bundle, generic_run):
    """Found, not told: the method mines "airplane"; held-out airplanes move away from that name (and leave its
    top-k) while the siblings' similarity to it stays. The fast test model generalises from its 100 training airplanes
    only partly (held-out top-15 12 -> 10 here; the shipped model's marmosets: 19 -> 2, BENCHMARKS "Generic path")."""
    result, gallery, before, after = generic_run
    mined = result.folder.forget_texts()
    assert mined and "airplane" in mined[0], mined
    prompt = mined[0]
    drop = {c: _mean_similarity(bundle, before, gallery, prompt, c)
            - _mean_similarity(bundle, after, gallery, prompt, c) for c in VEHICLES}
    assert drop["airplane"] >= 0.1, drop
    assert all(drop[c] < 0.05 for c in VEHICLES if c != "airplane"), drop
    was = _count(gallery, _top(bundle, before, prompt), "airplane")
    now = _count(gallery, _top(bundle, after, prompt), "airplane")
    assert was >= K * 0.6 and now < was, (was, now)


def test_a_sibling_under_the_same_label_is_kept(bundle, generic_run):
    _, gallery, before, after = generic_run
    for sibling in ("ship", "truck"):
        was = _count(gallery, _top(bundle, before, f"a photo of a {sibling}."), sibling)
        now = _count(gallery, _top(bundle, after, f"a photo of a {sibling}."), sibling)
        assert now >= 0.8 * was, (sibling, was, now)


def test_an_unrelated_prompts_top_k_is_kept(bundle, generic_run):
    """Four prompts of classes the task never saw keep their top-k: 0.7 on the mean, 0.6 (9 of 15) on each; a model
    that lost them keeps a third or less. (fp32 on the CPU, D15, moved one frog image: 10 of 15 kept.)"""
    _, _, before, after = generic_run
    overlaps = {}
    for prompt in ("a photo of a frog.", "a photo of a horse.", "a photo of a deer.", "a photo of a cat."):
        overlaps[prompt] = len(set(_top(bundle, before, prompt)) & set(_top(bundle, after, prompt))) / K
    assert sum(overlaps.values()) / len(overlaps) >= 0.7, overlaps
    assert min(overlaps.values()) >= 0.6, overlaps
