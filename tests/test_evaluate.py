import math

import pytest

from clipforget.evaluate import ratio, score, score_from_sets, zero_shot_accuracy


def test_score_matches_paper_table1_rn50_ft_row():
    # Table 1, RN50, FT: target ratio 4.9 %, retained ratios 100.0, 42.8, 19.2, 28.5, 46.8, 28.4 -> Score 51.5
    value = score(0.049, [1.0, 0.428, 0.192, 0.285, 0.468, 0.284])
    assert round(value, 1) == 51.5


def test_ratio_is_capped_and_handles_zero_original():
    assert ratio(0.9, 0.6) == 1.0
    assert ratio(0.3, 0.6) == pytest.approx(0.5)
    assert ratio(0.0, 0.0) == 1.0


def test_score_from_sets_counts_target_inverted():
    sets = {
        "target": {"acc": 0.0, "acc_original": 0.8},
        "keep": {"acc": 0.4, "acc_original": 0.8},
    }
    assert score_from_sets(sets, "target") == pytest.approx(75.0)


def test_zero_shot_accuracy_of_embedded_model_beats_chance(bundle, cifar_small):
    acc = zero_shot_accuracy(bundle, cifar_small, list(sorted(set(cifar_small.labels))))
    assert acc > 0.5  # ten classes: chance is 0.1


def test_zero_shot_accuracy_rejects_unknown_labels(bundle, cifar_small):
    with pytest.raises(ValueError, match="not among the zero-shot classes"):
        zero_shot_accuracy(bundle, cifar_small, ["airplane", "ship"])
    assert math.isnan(zero_shot_accuracy(bundle, cifar_small.subset([]), ["a", "b"]))
