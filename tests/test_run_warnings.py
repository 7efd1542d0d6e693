"""The run's warnings: what the Score hides, said in words (metrics.json, the CLI, the report)."""

from __future__ import annotations

from clipforget.evaluation import MIN_TRUSTED_IMAGES, run_warnings, summarize


def test_a_kept_set_taken_along_a_forget_set_kept_and_a_small_set_are_each_named():
    # the battery's sports-car run: its siblings went from "car" to "vehicle" with the subgroup
    summary = summarize({"forget_heldout": 0.83, "retain_heldout": 0.52, "tiny": 0.6},
                        {"forget_heldout": 0.10, "retain_heldout": 0.056, "tiny": 0.6},
                        {"forget_heldout": "target", "retain_heldout": "retain", "tiny": "retained"},
                        {"forget_heldout": 30, "retain_heldout": 90, "tiny": 8})
    warnings = run_warnings(summary["zero_shot"])
    assert len(warnings) == 2, warnings
    assert "'retain_heldout' keeps only 0.11" in warnings[0] and "52.0 % → 5.6 %" in warnings[0]
    assert "'tiny' holds 8 images" in warnings[1] and str(MIN_TRUSTED_IMAGES) in warnings[1]


def test_a_run_that_forgot_and_kept_has_no_warning_and_one_that_did_not_forget_says_so():
    good = summarize({"f": 0.8, "r": 0.7}, {"f": 0.0, "r": 0.69}, {"f": "target", "r": "retain"}, {"f": 40, "r": 90})
    assert run_warnings(good["zero_shot"]) == []
    kept = summarize({"f": 0.8, "r": 0.7}, {"f": 0.6, "r": 0.7}, {"f": "target", "r": "retain"}, {"f": 40, "r": 90})
    assert run_warnings(kept["zero_shot"]) == ["'f' keeps 0.75 of its zero-shot accuracy (80.0 % → 60.0 %): not "
                                               "forgotten"]
