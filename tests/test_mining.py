"""Forget texts found from the images (decisions D13): the names the original model retrieves the forget images by,
not the retain images' names."""

from __future__ import annotations

import numpy as np

from clipforget.data.task import UnlearningTask
from clipforget.stages.mining import MiningConfig, mine_forget_texts, mining_vocabulary

VOCABULARY = ["airplane", "automobile", "truck", "ship", "bird", "cat", "deer", "dog", "frog", "horse", "tree",
              "building", "road", "sky"]


def _vehicles(cifar_small, forget_class: str) -> UnlearningTask:
    labels = np.asarray(cifar_small.labels)
    vehicles = ("airplane", "automobile", "ship", "truck")
    forget = cifar_small.where((labels == forget_class).tolist()).relabel("vehicle")
    retain = cifar_small.where(np.isin(labels, [v for v in vehicles if v != forget_class]).tolist()).relabel("vehicle")
    return UnlearningTask(forget, retain, ["vehicle", "animal"], name=f"vehicles-without-{forget_class}")


def test_the_subgroups_own_name_is_found_and_its_siblings_names_are_not(bundle, cifar_small):
    for forget_class in ("airplane", "ship"):
        mined = mine_forget_texts(bundle, _vehicles(cifar_small, forget_class), VOCABULARY, MiningConfig())
        names = [m.name for m in mined]
        assert names and names[0] == forget_class, (forget_class, [(m.name, m.precision, m.gap) for m in mined])
        siblings = {"airplane", "automobile", "ship", "truck"} - {forget_class}
        assert not siblings & set(names), names
        assert all(m.precision >= 0.8 and m.gap > 0 for m in mined)
        assert mined[0].text == f"a photo of a {forget_class}."


def test_nothing_is_mined_when_forget_and_retain_look_alike(bundle, cifar_small):
    labels = np.asarray(cifar_small.labels)
    cars = np.flatnonzero(labels == "automobile")
    half = len(cars) // 2
    task = UnlearningTask(cifar_small.subset(cars[:half].tolist()).relabel("car"),
                          cifar_small.subset(cars[half:].tolist()).relabel("car"), ["car", "animal"])
    assert mine_forget_texts(bundle, task, VOCABULARY, MiningConfig()) == []  # no name tells two halves apart
    assert mine_forget_texts(bundle, _vehicles(cifar_small, "ship"), VOCABULARY, MiningConfig(max_texts=0)) == []


def test_the_vocabulary_comes_from_the_data_root(has_data):
    names = mining_vocabulary(extra=["My Label"])
    assert names[0] == "my label" and len(names) == len(set(names))
    assert {"marmoset", "macaque", "airliner"} <= set(names)  # ImageNet-1k's synonyms
