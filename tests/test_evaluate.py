import math

import pytest
import torch

from clipforget.evaluation import ratio, score, summarize, zero_shot_accuracy
from clipforget.models import encode


def test_score_matches_paper_table1_rn50_ft_row():
    # Table 1, RN50, FT: target ratio 4.9 %, retained ratios 100.0, 42.8, 19.2, 28.5, 46.8, 28.4 -> Score 51.5
    value = score(0.049, [1.0, 0.428, 0.192, 0.285, 0.468, 0.284])
    assert round(value, 1) == 51.5


def test_ratio_is_capped_and_handles_zero_original():
    assert ratio(0.9, 0.6) == 1.0
    assert ratio(0.3, 0.6) == pytest.approx(0.5)
    assert ratio(0.0, 0.0) == 1.0


def test_summary_counts_the_target_inverted_and_averages_several_targets():
    original, final = {"target": 0.8, "keep": 0.8}, {"target": 0.0, "keep": 0.4}
    summary = summarize(original, final, {"target": "target", "keep": "retain"})
    assert summary["score"] == pytest.approx(75.0)
    assert summary["zero_shot"]["keep"]["ratio"] == pytest.approx(0.5)
    two = summarize({"a": 0.8, "b": 0.8, "k": 0.5}, {"a": 0.0, "b": 0.4, "k": 0.5},
                     {"a": "target", "b": "target", "k": "retain"})
    assert two["score"] == pytest.approx(100 * (1 - 0.25 + 1.0) / 2)


def test_zero_shot_accuracy_of_embedded_model_beats_chance(bundle, cifar_small):
    acc = zero_shot_accuracy(bundle, cifar_small, list(sorted(set(cifar_small.labels))))
    assert acc > 0.5  # ten classes: chance is 0.1


def test_zero_shot_accuracy_rejects_unknown_labels(bundle, cifar_small):
    with pytest.raises(ValueError, match="not among the zero-shot classes"):
        zero_shot_accuracy(bundle, cifar_small, ["airplane", "ship"])
    assert math.isnan(zero_shot_accuracy(bundle, cifar_small.subset([]), ["a", "b"]))


def test_original_accuracies_are_cached_per_model_and_set(bundle, cifar_small, monkeypatch, tmp_path):
    from clipforget import evaluation
    from clipforget.data.task import EvalSet

    monkeypatch.setenv("CLIPFORGET_CACHE", str(tmp_path))
    classes = sorted(set(cifar_small.labels))
    sets = [EvalSet("a", cifar_small.subset(range(0, 100, 2)), classes), EvalSet("b", cifar_small.subset(range(5)),
                                                                                   classes)]
    first = evaluation.original_accuracies(bundle, sets)
    assert first["a"] == pytest.approx(zero_shot_accuracy(bundle, sets[0].images, classes))

    def fail(*args, **kwargs):
        raise AssertionError("cached accuracies must not be recomputed")

    monkeypatch.setattr(evaluation, "zero_shot_accuracy", fail)
    assert evaluation.original_accuracies(bundle, sets) == first
    changed = [EvalSet("a", cifar_small.subset(range(1, 100, 2)), classes)]  # same name, other images
    with pytest.raises(AssertionError, match="must not be recomputed"):
        evaluation.original_accuracies(bundle, changed)


def test_class_texts_are_encoded_once_per_text_tower_and_kept_on_disk(bundle, tmp_path, monkeypatch):
    """Evaluations, stages and curves ask for the same class texts many times (ImageNet's 1,000 classes: ~50 s on
    one core); the text tower is encoded once per (text weights, templates, names), in the process or on disk."""
    monkeypatch.setenv("CLIPFORGET_CACHE", str(tmp_path))
    monkeypatch.setattr(encode, "_CLASS_TEXTS", {})
    calls: list[int] = []
    original_encode = bundle.model.encode_text
    monkeypatch.setattr(bundle.model, "encode_text",
                        lambda tokens: calls.append(len(tokens)) or original_encode(tokens))
    names = ["cat", "dog", "monkey"]
    first = encode.text_classifier(bundle, names)
    assert len(calls) == 1 and first.shape[0] == 3
    first.mul_(0)  # a caller changing its copy changes nothing kept
    again = encode.text_classifier(bundle, names)
    assert len(calls) == 1 and float(again.norm(dim=-1).min()) > 0.99
    encode._CLASS_TEXTS.clear()  # a new process: read from disk
    from_disk = encode.text_classifier(bundle, names)
    assert len(calls) == 1 and torch.equal(from_disk, again)
    assert list(tmp_path.glob("class_texts/*.safetensors"))
    encode.text_classifier(bundle, ["cat", "dog"])  # other names: encoded
    assert len(calls) == 2
    text_param = [p for n, p in bundle.model.named_parameters() if n.startswith("text.")][-1]
    with torch.no_grad():
        text_param.add_(0.01)
        try:
            changed = encode.text_classifier(bundle, names)  # other text weights: encoded again
        finally:
            text_param.sub_(0.01)
    assert len(calls) == 3 and not torch.equal(changed, again)
