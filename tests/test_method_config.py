"""``--set FIELD=VALUE``: one setting of a method's config changed from the command line, or a clear error."""

from __future__ import annotations

import pytest

from clipforget.methods.ours import ThreeStageConfig
from clipforget.methods.registry import override_config


def test_override_sets_nested_fields_with_json_values():
    config = ThreeStageConfig()
    override_config(config, "remind.activation_epsilon=0.5")
    override_config(config, "remind.steps=40")
    override_config(config, "forget.lr=1")  # an int where a float is expected stays a float
    override_config(config, "skip_remind=true")
    override_config(config, "restore.retrieval_tolerance=null")  # an optional field may be switched off
    override_config(config, "restore.alphas=[0.5, 1.0]")
    assert config.remind.activation_epsilon == 0.5 and config.remind.steps == 40
    assert config.forget.lr == 1.0 and isinstance(config.forget.lr, float)
    assert config.skip_remind is True and config.restore.retrieval_tolerance is None
    assert config.restore.alphas == [0.5, 1.0]
    assert ThreeStageConfig().remind.steps != 40  # defaults are untouched


@pytest.mark.parametrize(("assignment", "message"), [
    ("remind.stepz=40", "no field 'stepz'"),
    ("remind=3", "is a group"),
    ("remind.steps=many", "expected a value like"),
    ("skip_remind=1", "expected a value like"),
    ("remind.steps.x=1", "is a value"),
    ("remind.steps", "FIELD=VALUE"),
])
def test_override_refuses_what_the_config_does_not_have(assignment, message):
    config = ThreeStageConfig()
    with pytest.raises(ValueError, match=message):
        override_config(config, assignment)
    assert config == ThreeStageConfig()


def test_cli_refuses_a_mistyped_setting_before_doing_any_work(tmp_path, capsys):
    from clipforget.cli import main

    out = tmp_path / "run"
    assert main(["run", "monkeys", "--size", "quick", "--set", "remind.stepz=40", "--out", str(out)]) == 2
    assert "no field 'stepz'" in capsys.readouterr().err
    assert not out.exists()


def test_bench_overrides_reach_only_the_methods_that_have_the_setting():
    from clipforget.methods.registry import available_methods, method_config

    ours = method_config("ours", 3, ["remind.steps=7"])
    assert ours.remind.steps == 7 and ours.remind.seed == 3
    others = [name for name in available_methods() if name != "ours"]
    assert others and all(method_config(name, 0, ["remind.steps=7"]) == method_config(name) for name in others)


def test_bench_refuses_a_setting_no_chosen_method_has(tmp_path):
    from clipforget.experiments.bench import BenchPlan, run_bench

    plan = BenchPlan("cifar10", tmp_path / "bench", ("ours",), 1, "quick", overrides=("remind.stepz=7",))
    with pytest.raises(ValueError, match="none of ours has that setting"):
        run_bench(None, plan)  # refused before the model is touched
    assert not any((tmp_path / "bench").glob("*/seed0"))


def test_nested_mapping_overrides_are_the_same_assignments():
    from clipforget.methods.registry import apply_overrides

    config = ThreeStageConfig()
    apply_overrides(config, {"remind": {"steps": 40, "forget_weight": 3}, "forget": {"lora_rank": 4}})
    assert config.remind.steps == 40 and config.remind.forget_weight == 3.0
    assert config.forget.lora_rank == 4
    with pytest.raises(ValueError, match="no field 'stepz'"):
        apply_overrides(config, {"remind": {"stepz": 1}})


def test_a_finished_bench_run_is_reused_only_with_the_same_settings():
    import json
    from dataclasses import asdict

    from clipforget.methods.registry import available_methods, method_config
    from clipforget.pipeline.folder import config_changes

    for name in available_methods():  # every method's config round-trips through a run folder's config.json
        config = method_config(name, 1)
        assert config_changes(json.loads(json.dumps(asdict(config))), config) == []
    recorded = json.loads(json.dumps(asdict(method_config("ours", 1))))
    assert config_changes(recorded, method_config("ours", 1, ["remind.activation_epsilon=0.25"])) == [
        "remind.activation_epsilon"]
    assert "forget.seed" in config_changes(recorded, method_config("ours", 2))
    assert config_changes(None, method_config("ours", 1))  # a folder without a recorded config is not reused
