"""The stress test (issue 37): other names from WordNet, the name sweep, relearning and unseen photos of a run made
on the generic path (CIFAR-10 airplanes forgotten as "vehicle", the fast test model), and the paraphrases the
forget stage trains against (D34)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from conftest import TEST_MODEL

from clipforget.cli.main import main as cli
from clipforget.core.paths import data_root
from clipforget.data.wordnet import load_wordnet, wnid_offset
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.stress import STRESS_FILE, StressConfig, stress_test, verdicts
from clipforget.retrieval.index import load_index
from clipforget.retrieval.paraphrases import TEMPLATES, expand, folder_name, related_names
from index_builder.build import BuildConfig, build

needs_wordnet = pytest.mark.skipif(load_wordnet() is None, reason="WordNet 3.0 (Debian wordnet-base) not installed")


@needs_wordnet
def test_wordnet_offsets_are_imagenet_ids_and_give_the_subgroups_other_names():
    wn = load_wordnet()
    marmoset = wn.synset(wnid_offset("n02490219"))
    assert marmoset.words == ("marmoset",)
    below = {w for s in wn.hyponyms(marmoset.offset) for w in s.words}
    assert "pygmy marmoset" in below and "tamarin" in below
    above = {w for s in wn.hypernyms(marmoset.offset) for w in s.words}
    assert "new world monkey" in above
    assert [s.offset for s in wn.synsets("Golden Retriever")] == [2099601]
    names = related_names(["marmoset"], wn)
    assert names["marmoset"] == "base" and names["pygmy marmoset"] == "hyponym"
    assert names["new world monkey"] == "hypernym"


def test_paraphrases_put_every_name_in_every_template_and_hypernyms_in_few():
    texts = expand({"marmoset": "base", "new world monkey": "hypernym"})
    mine = [t.text for t in texts if t.name == "marmoset"]
    assert len(mine) == len(TEMPLATES) and "marmoset" in mine and "a marmoset in the wild." in mine
    assert len([t for t in texts if t.family == "hypernym"]) == 2
    assert folder_name("pygmy_marmoset") == "pygmy marmoset"
    assert folder_name("forget") is None and folder_name("n02099601") is None


VEHICLES = ("airplane", "automobile", "ship", "truck")


@pytest.fixture(scope="module")
def stressed(has_data, tmp_path_factory):
    """A generic-path run (`unlearn`, only the label "vehicle") on 40 airplanes vs 40 of each other vehicle, a
    held-out gallery of CIFAR-10 test images, and its stress test."""
    tmp = tmp_path_factory.mktemp("stress")
    train = data_root() / "cifar10" / "train"
    for role, classes in (("forget", VEHICLES[:1]), ("retain", VEHICLES[1:])):
        for c in classes:
            (tmp / role / c).mkdir(parents=True)
            for f in sorted((train / c).iterdir())[:40]:
                shutil.copyfile(f, tmp / role / c / f.name)
    test = data_root() / "cifar10" / "test"
    for c in (*VEHICLES, "cat", "frog"):
        (tmp / "gallery" / c).mkdir(parents=True)
        for f in sorted((test / c).iterdir())[:30]:
            shutil.copyfile(f, tmp / "gallery" / c / f.name)
    run_dir = tmp / "run"
    assert cli(["unlearn", "--forget", str(tmp / "forget"), "--retain", str(tmp / "retain"), "--label", "vehicle",
                "--retain-label", "vehicle", "--classes", "animal", "--model", TEST_MODEL, "--quiet",
                "--out", str(run_dir), "--set", "forget.steps=60", "--set", "forget.lr=0.01",
                "--set", "forget.fisher_samples=32", "--set", "remind.steps=4", "--set", "remind.align_steps=2",
                "--set", "remind.align_images=32", "--set", "mining.max_paraphrases=8",
                "--set", "restore.alphas=[0.0, 0.5, 1.0]"]) == 0
    index = build([tmp / "gallery"], tmp / "index", BuildConfig(model=TEST_MODEL, workers=0))
    run = RunFolder(run_dir)
    result = stress_test(run, load_index(index), ["gallery/airplane/"],
                         cfg=StressConfig(k=15, relearn_steps=(0, 10), relearn_lr=1e-3, optimised=3, min_before=8))
    return run, result


def test_the_name_sweep_tries_many_texts_and_names_the_worst(stressed):
    run, result = stressed
    names = result["names"]
    families = set(names["families"])
    assert {"base", "optimised"} <= families, families
    if load_wordnet() is not None:
        assert "hyponym" in families  # "airliner", "jet" under "airplane"
    rows = names["texts"]
    assert len(rows) >= 30
    assert [r["after"] for r in rows] == sorted((r["after"] for r in rows), reverse=True)
    counted = [r for r in rows if r["before"] >= 8]
    assert names["counted"] == len(counted)
    if counted:
        assert names["worst"]["after"] == max(r["after"] for r in counted)
    # the sweep and the relearning table count with separate passes over the gallery: at step 0 they must agree
    relearning = result["relearning"]
    primary = next(r for r in rows if r["text"] == relearning["texts"][0])
    start = {(r["attack"], r["model"]): r["top_k"] for r in relearning["rows"] if r["steps"] == 0}
    assert start[("retain only", "unlearned")] == primary["after"]
    assert start[("retain only", "original")] == primary["before"]
    assert (run.path / STRESS_FILE).is_file()


def test_the_paraphrases_the_run_trained_against_are_logged_apart(stressed):
    run, _ = stressed
    log = run.method_log()
    assert log["config"]["mining"]["max_paraphrases"] == 8 and len(log["paraphrases"]) <= 8
    assert set(run.paraphrase_texts()) <= set(log["forget_texts"])
    assert not set(run.paraphrase_texts()) & set(run.forget_texts())  # "also forgotten as" lists mined names only


def test_relearning_on_forget_images_brings_the_subgroup_back_and_the_table_says_so(stressed):
    _, result = stressed
    rows = result["relearning"]["rows"]
    unlearned = {r["steps"]: r for r in rows if r["attack"] == "5 forget images" and r["model"] == "unlearned"}
    assert set(unlearned) == {0, 10}
    assert unlearned[10]["zero_shot"] > unlearned[0]["zero_shot"], unlearned  # the attack trains
    assert {r["model"] for r in rows} == {"unlearned", "original"}
    assert result["weight_distance"] > 0


def test_unseen_photos_are_compared_with_the_trained_ones(stressed):
    _, result = stressed
    unseen = result["unseen"]
    assert unseen["trained"]["images"] == 32 and unseen["heldout"]["images"] == 30  # 40 less the 20 % held out
    assert unseen["trained"]["acc"] < unseen["trained"]["acc_original"]
    assert abs(unseen["gap"] - (unseen["trained"]["forgotten"] - unseen["heldout"]["forgotten"])) < 1e-9
    assert [v["test"] for v in result["verdicts"]] == ["other names", "relearning (retain images only)",
                                                       "unseen photos"]


def test_the_cli_prints_the_verdict_table(stressed, tmp_path, capsys):
    run, _ = stressed
    index = Path(run.path).parent / "index"
    assert cli(["stress", "--run", str(run.path), "--index", str(index), "--subgroup", "gallery/airplane/",
                "--no-relearn", "--quiet", "-k", "15"]) == 0
    out = capsys.readouterr().out
    assert "other names" in out and "unseen photos" in out and "worst of" in out


def test_the_report_carries_the_stress_test_and_refuses_prompts_without_a_gallery(stressed, tmp_path, capsys):
    run, _ = stressed
    out = tmp_path / "report.html"
    assert cli(["report", "--run", str(run.path), "--prompt", "a photo of a jet", "--out", str(out)]) == 2
    refused = capsys.readouterr().err
    assert "--prompt needs --index" in refused and '"a photo of a jet"' in refused and not out.exists()
    assert cli(["report", "--run", str(run.path), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Stress test" in page and "other names" in page and "unseen photos" in page
    # no retrieval audit, and the report and stderr say so and how to add one
    said = capsys.readouterr().err
    assert "Retrieval left out: no --index (a gallery index) and no --prompt given" in said, said
    assert "Retrieval left out" in page and "Add --index INDEX --prompt" in page


def test_a_shallow_name_verdict_points_to_the_deeper_setting_only_when_the_run_was_made_without_it(stressed):
    _, result = stressed
    assert result["method_mining"]["max_paraphrases"] == 8
    shallow = copy.deepcopy(result)
    shallow["names"]["verdict"] = "partly"
    assert "max_paraphrases=32" not in verdicts(shallow)[0]["numbers"]  # the run already trained against them
    shallow["method_mining"]["max_paraphrases"] = 0
    assert "`--set mining.max_paraphrases=32`" in verdicts(shallow)[0]["numbers"]
    shallow["names"]["verdict"] = "forgotten"
    assert "max_paraphrases" not in verdicts(shallow)[0]["numbers"]
