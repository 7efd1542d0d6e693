"""Setting builders (style, subgroup, LIVING-17), merging, the alpha sweep and the bench table / command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_MODEL
from PIL import Image

from clipforget.core.errors import DataError
from clipforget.data.cifar10 import CIFAR10_CLASSES, cifar10
from clipforget.data.imagenet import living17
from clipforget.data.styles import stylize
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.evaluation import evaluate_sets
from clipforget.experiments.ablations import alpha_sweep
from clipforget.experiments.bench import aggregate, markdown_table, mean_rows
from clipforget.experiments.suite import SuiteCell, score_matrix, suite_markdown
from clipforget.models.weights import clone_state, merge_states
from clipforget.settings.living17 import living17_task
from clipforget.settings.style import StyleSizes, style_task
from clipforget.settings.subgroup import SubgroupSizes, subgroup_task


def _base(path: str) -> str:
    return path.split("#", 1)[0]


def test_style_task_forgets_one_style_of_one_class(has_data):
    sizes = StyleSizes(train_per_style=6, calibration_per_style=2, eval_per_style=4, eval_other_per_class=1)
    task, evals = style_task(32, seed=0, sizes=sizes, forget_class="automobile", forget_style="sketch")
    assert set(task.forget.labels) == set(task.retain.labels) == {"automobile"}
    assert len(task.forget) == 6 and len(task.retain) == 18
    assert all(p.endswith("#sketch") for p in task.forget.paths)
    assert not any(p.endswith("#sketch") for p in task.retain.paths)
    # each source image is rendered in one style only, and training / calibration / test never share one
    train_sources = [_base(p) for p in task.forget.paths + task.retain.paths]
    cal_sources = [_base(p) for p in task.calibration_forget.paths + task.calibration_retain.paths]
    assert len(set(train_sources)) == len(train_sources) and not set(train_sources) & set(cal_sources)
    # the forget images really are sketches of CIFAR photos
    photo = cifar10("train", 32, ("automobile",), 8, 8, None, 0)  # "sketch" is STYLES[1]: the 2nd slice of 8
    assert torch.equal(task.forget.images[0], stylize(photo.images[:1], "sketch")[0])
    by_name = {e.name: e for e in evals}
    assert by_name["target_style"].role == "target"
    assert all(p.endswith("#sketch") for p in by_name["target_style"].images.paths)
    assert "automobile" not in by_name["cifar10_other"].images.labels
    assert set(by_name["retain_styles"].images.labels) == {"automobile"}


def test_subgroup_task_labels_airplanes_as_vehicle(has_data):
    sizes = SubgroupSizes(forget=8, retain_per_class=4, calibration_forget=2, calibration_retain_per_class=2,
                          eval_per_class=3)
    task, evals = subgroup_task(32, seed=0, sizes=sizes, forget_class="airplane")
    assert task.classnames == ["vehicle", "animal"]
    assert set(task.forget.labels) == {"vehicle"} and all("/airplane/" in p for p in task.forget.paths)
    assert set(task.retain.labels) == {"vehicle"}
    assert {p.split("/")[2] for p in task.retain.paths} == {"automobile", "ship", "truck"}
    by_name = {e.name: e for e in evals}
    assert set(by_name["cifar10_target"].images.labels) == {"vehicle"}
    assert by_name["cifar10_target"].role == "target"
    assert set(by_name["cifar10_animal"].images.labels) == {"animal"} and len(by_name["cifar10_animal"].images) == 18
    assert set(by_name["imagenet_target"].images.labels) == {"vehicle"}
    assert set(by_name["imagenet_all"].images.labels) == {"vehicle", "animal"}


def _fake_imagenet(root: Path, wnids: list[str], per_class: int = 5) -> None:
    rng = np.random.default_rng(0)
    for wnid in wnids:
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(root / wnid / f"{wnid}_{i}.JPEG")


def test_living17_task_on_a_synthetic_imagenet_folder(tmp_path, has_data):
    hierarchy = living17()
    wnid = {e["name"].split(",")[0]: e["wnid"] for entries in hierarchy.values() for e in entries}
    needed = [e["wnid"] for e in hierarchy["monkey"] + hierarchy["turtle"] + hierarchy["ape"]]
    _fake_imagenet(tmp_path, needed)
    from clipforget.settings.living17 import Living17Sizes

    sizes = Living17Sizes(train_per_subclass=2, calibration_per_subclass=1, eval_per_subclass=2,
                          cifar_eval_per_class=0)
    task, evals = living17_task(32, seed=0, sizes=sizes, imagenet_root=tmp_path)
    assert len(task.classnames) == 17 and {"monkey", "turtle", "ape"} <= set(task.classnames)
    assert sorted(set(task.forget.labels)) == ["monkey", "turtle"]
    forget_dirs = {Path(p).parent.name for p in task.forget.paths}
    assert forget_dirs == {wnid["marmoset"], wnid["box turtle"]}
    retain_dirs = {Path(p).parent.name for p in task.retain.paths}
    assert len(retain_dirs) == 6 and not retain_dirs & forget_dirs
    assert len(task.forget) == 4 and len(task.retain) == 12
    by_name = {e.name: e for e in evals}
    assert {Path(p).parent.name for p in by_name["imagenet_target"].images.paths} == forget_dirs
    assert set(by_name["living17_other"].images.labels) == {"ape"}
    # train, calibration and evaluation files are disjoint
    used = task.forget.paths + task.retain.paths
    held = by_name["imagenet_target"].images.paths + by_name["imagenet_retain"].images.paths
    assert not set(used) & set(held) and not set(used) & set(task.calibration_forget.paths)


def test_living17_task_needs_the_forgotten_superclasses(tmp_path, has_data):
    hierarchy = living17()
    _fake_imagenet(tmp_path, [e["wnid"] for e in hierarchy["monkey"]], per_class=3)
    with pytest.raises(DataError, match="box turtle"):
        living17_task(32, imagenet_root=tmp_path)
    with pytest.raises(DataError, match="not a subclass"):
        living17_task(32, imagenet_root=tmp_path, forget={"monkey": "box turtle"})


def test_merge_states_mean_and_task_arithmetic():
    base = {"w": torch.zeros(3), "n": torch.tensor(5)}
    a = {"w": torch.tensor([2.0, 0.0, 0.0]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([0.0, 4.0, 0.0]), "n": torch.tensor(9)}
    mean = merge_states([a, b], base, "mean")
    assert torch.equal(mean["w"], torch.tensor([1.0, 2.0, 0.0])) and int(mean["n"]) == 5
    assert torch.equal(merge_states([a, b], base, "sum")["w"], torch.tensor([2.0, 4.0, 0.0]))
    assert torch.equal(merge_states([a, b])["w"], torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError):
        merge_states([a, b], None, "sum")


def _metrics(score: float, target: float, retain: float) -> dict:
    return {
        "score": score, "total_seconds": 10.0, "alpha": None,
        "zero_shot": {
            "t": {"acc": target, "acc_original": 0.8, "ratio": min(target / 0.8, 1), "role": "target"},
            "r": {"acc": retain, "acc_original": 0.5, "ratio": min(retain / 0.5, 1), "role": "retain"},
        },
    }


def test_aggregate_and_table_in_the_paper_layout():
    agg = aggregate({"ga": [_metrics(40.0, 0.0, 0.1), _metrics(50.0, 0.2, 0.3)], "ours": [_metrics(90.0, 0.0, 0.5)]})
    assert agg["methods"]["ga"]["score"] == pytest.approx((45.0, 5.0))
    assert agg["methods"]["ga"]["sets"]["r"]["acc"] == pytest.approx((0.2, 0.1))
    table = markdown_table(agg, "demo")
    assert "| Original | 80.0 | 50.0 |" in table
    assert "| ga | 10.0 ± 10.0 (12.5) | 20.0 ± 10.0 (40.0) | 45.0 ± 5.0 |" in table
    assert "**90.0**" in table and "t (target ↓)" in table


def test_mean_rows_averages_over_seeds():
    rows = mean_rows([[{"alpha": 0.1, "acc": 0.2}], [{"alpha": 0.1, "acc": 0.4}]], "alpha")
    assert rows == [{"alpha": 0.1, "acc": pytest.approx(0.3)}]


def test_alpha_sweep_ends_at_original_and_unlearned(bundle, cifar_small):
    sets = [EvalSet("all", cifar_small.subset(range(0, 200, 4)), list(CIFAR10_CLASSES))]
    theta_0 = clone_state(bundle.model.visual)
    broken = {k: (v * 0.0 if k.startswith("attnpool.c_proj") else v) for k, v in theta_0.items()}
    rows = alpha_sweep(bundle, broken, sets, [0.0, 1.0])
    assert rows[0]["all"] == pytest.approx(evaluate_sets(bundle, None, sets)["all"])
    assert rows[1]["all"] == pytest.approx(0.1, abs=0.11)  # a zeroed output projection is at chance or below


def test_bench_command_writes_table_chart_and_resumes(bundle, cifar_small, tmp_path, monkeypatch):
    from clipforget.cli import main
    from clipforget.settings import registry

    def tiny(image_size, seed, sizes):
        forget = cifar_small.where([x == "airplane" for x in cifar_small.labels]).subset(range(seed, seed + 8))
        retain = cifar_small.where([x == "bird" for x in cifar_small.labels]).subset(range(8))
        classes = list(CIFAR10_CLASSES)
        task = UnlearningTask(forget, retain, classes, name="tiny")
        return task, [EvalSet("target", forget, classes, "target"), EvalSet("keep", retain, classes)]

    monkeypatch.setitem(registry._REGISTRY, "tiny", registry.Setting("tiny", "test", tiny, dict.fromkeys(
        registry.SIZE_PRESETS)))
    argv = ["bench", "--setting", "tiny", "--methods", "nullspace,fisher", "--seeds", "2", "--out", str(tmp_path),
            "--quiet", "--model", TEST_MODEL]
    assert main(argv) == 0
    for method in ("nullspace", "fisher"):
        for seed in (0, 1):
            metrics = json.loads((tmp_path / method / f"seed{seed}" / "metrics.json").read_text())
            assert metrics["method"] == method and "score" in metrics
    table = (tmp_path / "results.md").read_text()
    assert "| nullspace |" in table and "| fisher |" in table and "Score" in table
    assert (tmp_path / "chart.html").stat().st_size > 1000
    stamp = (tmp_path / "fisher" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished runs are reused
    assert (tmp_path / "fisher" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp


def test_suite_matrix_gives_ours_margin_over_the_best_baseline():
    per_cell = {
        "a": aggregate({"ours": [_metrics(90.0, 0.0, 0.5), _metrics(80.0, 0.0, 0.5)], "ga": [_metrics(60.0, 0.2, 0.3)],
                        "ft": [_metrics(70.0, 0.2, 0.3)]}),
        "b": aggregate({"ours": [_metrics(50.0, 0.0, 0.5)], "ga": [_metrics(55.0, 0.2, 0.3)]}),
    }
    matrix = score_matrix(per_cell)
    assert matrix["scores"]["ours"]["a"] == pytest.approx((85.0, 5.0))
    assert matrix["margin"]["a"]["best_baseline"] == "ft" and matrix["margin"]["a"]["margin"] == pytest.approx(15.0)
    assert matrix["margin"]["b"]["margin"] == pytest.approx(-5.0)
    table = suite_markdown(matrix, "t")
    assert "| ours | **85.0 ± 5.0** | 50.0 | 67.5 |" in table
    assert "| ft | 70.0 | – | 70.0 |" in table  # a method missing from a cell is shown as such, not as 0
    assert "+15.0 (ft)" in table and "-5.0 (ga)" in table


def test_bench_suite_runs_every_cell_and_writes_the_score_chart(bundle, cifar_small, tmp_path, monkeypatch):
    from clipforget.cli import main
    from clipforget.experiments import suite
    from clipforget.settings import registry

    def tiny(image_size, seed, sizes, forget_class="airplane"):
        forget = cifar_small.where([x == forget_class for x in cifar_small.labels]).subset(range(8))
        retain = cifar_small.where([x == "bird" for x in cifar_small.labels]).subset(range(8))
        task = UnlearningTask(forget, retain, list(CIFAR10_CLASSES), name=f"tiny-{forget_class}")
        return task, [EvalSet("target", forget, list(CIFAR10_CLASSES), "target"),
                      EvalSet("keep", retain, list(CIFAR10_CLASSES))]

    monkeypatch.setitem(registry._REGISTRY, "tiny", registry.Setting("tiny", "test", tiny, dict.fromkeys(
        registry.SIZE_PRESETS)))
    monkeypatch.setitem(suite.SUITES, "paper", (SuiteCell("air", "tiny"),
                                                SuiteCell("ship", "tiny", {"forget_class": "ship"})))
    argv = ["bench", "--suite", "paper", "--methods", "nullspace,fisher", "--seeds", "1", "--out", str(tmp_path),
            "--quiet", "--model", TEST_MODEL]
    assert main(argv) == 0
    for cell in ("air", "ship"):
        assert (tmp_path / cell / "results.md").exists()
        assert json.loads((tmp_path / cell / "fisher" / "seed0" / "metrics.json").read_text())["task"] == (
            "tiny-airplane" if cell == "air" else "tiny-ship")
    data = json.loads((tmp_path / "suite.json").read_text())
    assert data["cells"] == ["air", "ship"] and set(data["methods"]) == {"nullspace", "fisher"}
    assert "| nullspace |" in (tmp_path / "suite.md").read_text()
    assert (tmp_path / "suite.html").stat().st_size > 1000


def test_monkeys_setting_forgets_marmosets_as_monkey(has_data):
    from clipforget.data.monkeys10 import MARMOSETS
    from clipforget.settings import get_setting

    task, evals = get_setting("monkeys").build(16, seed=0, size="quick")
    assert set(task.forget.labels) == set(task.retain.labels) == {"monkey"} and "monkey" in task.classnames
    assert all("marmoset" in p for p in task.forget.paths) and not any("marmoset" in p for p in task.retain.paths)
    assert not set(task.forget.paths) & set(task.calibration_forget.paths)
    assert all("/train/" in p for p in task.forget.paths + task.calibration_retain.paths)
    by_name = {s.name: s for s in evals}
    assert by_name["marmosets"].role == "target" and all("/val/" in p for p in by_name["marmosets"].images.paths)
    assert {p.split("/")[-2] for p in by_name["marmosets"].images.paths} == {m.replace(" ", "_") for m in MARMOSETS}
    assert len(by_name["tiny_imagenet"].classnames) == 202


def test_cifar10_setting_keeps_the_class_in_other_domains(has_data):
    from clipforget.settings import get_setting

    _, evals = get_setting("cifar10").build(16, seed=0, size="quick", forget_class="automobile")
    other = next(s for s in evals if s.name == "other_domain_target")
    assert set(other.images.labels) == {"automobile"}
    tiny = [p for p in other.images.paths if "tiny-imagenet" in p]
    assert len(tiny) == 4 * 50 and len(other.images) > len(tiny)  # 4 Tiny-ImageNet car classes + ImageNet samples
    _, evals = get_setting("cifar10").build(16, seed=0, size="quick", forget_class="airplane")
    other = next(s for s in evals if s.name == "other_domain_target")
    assert not any("tiny-imagenet" in p for p in other.images.paths) and len(other.images) == 3
