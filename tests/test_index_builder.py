"""index_builder: build / load round trip, corrupt files, incremental add, shards + merge, index type rule, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_MODEL
from PIL import Image

from clipforget.core.errors import IndexLoadError
from clipforget.data.images import read_images
from clipforget.models.encode import encode_images
from clipforget.models.factory import create_model, find_bundled_checkpoint, new_model, save_checkpoint
from clipforget.models.fold import fold_batchnorm
from clipforget.models.layers import VisualOnly
from clipforget.retrieval.index import load_index
from clipforget.retrieval.search import search
from index_builder.__main__ import main as cli
from index_builder.build import BuildConfig, add, build, merge
from index_builder.indexing import build_faiss_index, choose_index_key, ivf_clusters
from index_builder.reader import file_label, list_gallery, parse_shard, shard_files

CLASSES = ("airplane", "cat", "ship")


def make_gallery(root: Path, per_class: int = 4, seed: int = 0, flat: bool = True) -> Path:
    """Synthetic gallery: class folders of random blob images (odd sizes, jpg and png) + one ImageNet-style file."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            base = rng.integers(0, 255, size=(1, 1, 3))
            noise = rng.normal(0, 60, size=(h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
            pixels = np.clip(base + noise + 40 * c, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{seed}_{i:02d}.{'png' if i % 2 else 'jpg'}")
    if flat:
        pixels = rng.integers(0, 255, size=(70, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "n02690373_airliner.JPEG")
    return root


@pytest.fixture(scope="session")
def model_spec(tmp_path_factory) -> str:
    """The embedded model when built, else a freshly initialised one saved as a checkpoint folder."""
    if find_bundled_checkpoint(TEST_MODEL) is not None:
        return TEST_MODEL
    folder = tmp_path_factory.mktemp("fresh_model")
    torch.manual_seed(0)
    save_checkpoint(new_model(TEST_MODEL), folder)
    return str(folder)


@pytest.fixture(scope="session")
def spec_bundle(model_spec):
    return create_model(model_spec)


def _build(galleries, out, spec, **kw) -> Path:
    return build(galleries, out, BuildConfig(model=spec, workers=0, batch_size=5, progress=False, **kw))


def test_round_trip_build_save_load_search(tmp_path, model_spec, spec_bundle):
    gallery = make_gallery(tmp_path / "gallery")
    out = _build([gallery], tmp_path / "index", model_spec)
    loaded = load_index(out)
    files, _ = list_gallery([gallery])
    assert len(loaded) == len(files) == 3 * 4 + 1
    assert loaded.info["count"] == len(loaded) and loaded.info["index_key"] == "Flat"
    assert isinstance(loaded.embeddings, np.memmap) and loaded.embeddings.dtype == np.float16
    assert loaded.labels.count("airplane") == 4 and "airliner" in loaded.labels
    # the DataLoader path gives what the core encoder gives for the same files, with the tower's BatchNorms folded
    # into its convolutions as the index records (D21); the plain tower agrees to bf16 rounding
    assert loaded.info["batchnorm_folded"] is True
    images = read_images([Path(p) for p in loaded.paths], spec_bundle.image_size, loaded.labels)
    folded = VisualOnly(fold_batchnorm(spec_bundle.model.visual))
    reference = encode_images(spec_bundle, images.images, model=folded).numpy()
    np.testing.assert_allclose(loaded.embeddings.astype(np.float32), reference, atol=3e-3)
    plain = encode_images(spec_bundle, images.images).numpy()
    assert (plain * loaded.embeddings.astype(np.float32)).sum(1).min() > 0.99
    # the saved FAISS index and the stored embeddings rank identically; every image finds itself first
    queries = np.asarray(loaded.embeddings[:5], dtype=np.float32)
    s_index, ids_index = search(loaded, queries, 4)
    s_array, ids_array = search(loaded.embeddings, queries, 4)
    np.testing.assert_array_equal(ids_index, ids_array)
    np.testing.assert_allclose(s_index, s_array, atol=1e-5)
    assert ids_index[:, 0].tolist() == [0, 1, 2, 3, 4]
    fresh = build_faiss_index(loaded.embeddings, "Flat")
    np.testing.assert_array_equal(fresh.search(queries, 4)[1], ids_index)


def test_corrupt_and_non_image_files_are_skipped_and_listed(tmp_path, model_spec):
    gallery = make_gallery(tmp_path / "gallery", per_class=2, flat=False)
    (gallery / "cat" / "garbage.jpg").write_bytes(b"not a jpeg at all")
    good = (gallery / "ship" / "0_00.jpg").read_bytes()
    (gallery / "ship" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (gallery / "notes.txt").write_text("hello")
    out = _build([gallery], tmp_path / "index", model_spec)
    loaded = load_index(out)
    skipped = {Path(s["path"]).name: s["reason"] for s in loaded.skipped}
    assert set(skipped) == {"garbage.jpg", "truncated.jpg", "notes.txt"}
    assert "not an image file type" in skipped["notes.txt"]
    assert "readable" in skipped["garbage.jpg"]
    assert len(loaded) == 6 and loaded.info["skipped"] == 3
    assert not any("garbage" in p or "truncated" in p for p in loaded.paths)


def test_incremental_add_equals_full_build(tmp_path, model_spec):
    first = make_gallery(tmp_path / "a", per_class=2, seed=1, flat=False)
    second = make_gallery(tmp_path / "b", per_class=2, seed=2, flat=True)
    out = _build([first], tmp_path / "index", model_spec)
    before = load_index(out)
    add(out, [second], batch_size=5, workers=0, progress=False)
    after = load_index(out)
    assert len(after) == len(before) + 7
    assert after.paths[: len(before)] == before.paths
    full = load_index(_build([first, second], tmp_path / "full", model_spec))
    assert after.paths == full.paths
    np.testing.assert_allclose(after.embeddings.astype(np.float32), full.embeddings.astype(np.float32), atol=2e-3)
    ids = search(after, np.asarray(after.embeddings[-3:], dtype=np.float32), 1)[1][:, 0]
    assert ids.tolist() == [len(after) - 3, len(after) - 2, len(after) - 1]
    add(out, [second], workers=0, progress=False)  # nothing new: unchanged
    assert len(load_index(out)) == len(after)
    assert set(after.info["galleries"]) == {str(first.resolve()), str(second.resolve())}


def test_sharded_build_merges_into_the_unsharded_index(tmp_path, model_spec):
    gallery = make_gallery(tmp_path / "gallery", per_class=3)
    (gallery / "readme.md").write_text("x")
    shards = [_build([gallery], tmp_path / f"s{i}", model_spec, shard=(i, 3)) for i in range(3)]
    assert sum(len(load_index(s)) for s in shards) == 10
    merged = load_index(merge(list(reversed(shards)), tmp_path / "merged"))
    single = load_index(_build([gallery], tmp_path / "single", model_spec))
    assert merged.paths == single.paths
    assert [s["path"] for s in merged.skipped] == [s["path"] for s in single.skipped]  # listed once
    np.testing.assert_allclose(merged.embeddings.astype(np.float32), single.embeddings.astype(np.float32), atol=2e-3)
    with pytest.raises(ValueError, match="exactly once"):
        merge(shards[:2], tmp_path / "broken")


def test_shard_slices_cover_every_file_once():
    files = list(range(11))
    parts = [shard_files(files, (i, 4)) for i in range(4)]
    assert [x for p in parts for x in p] == files
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_label_rule(tmp_path):
    root = tmp_path / "imagenet-samples"
    assert file_label(root / "n02690373_airliner.JPEG", root) == "airliner"
    assert file_label(root / "n04552348_warplane.JPEG", root) == "warplane"
    assert file_label(root / "holiday.jpg", root) == "imagenet-samples"
    assert file_label(root / "dog" / "sub" / "x.jpg", root) == "dog"


def test_index_key_rule_follows_autofaiss():
    assert choose_index_key(11_000, 256) == "Flat"
    assert choose_index_key(200_000, 256) == "HNSW32"
    # HNSW's M from the memory budget: floor((mem / (4n) - d) / 2)
    assert choose_index_key(1_000_000, 256, max_index_memory=4 * 1_000_000 * (256 + 2 * 10)) == "HNSW10"
    small_memory = choose_index_key(400_000, 256, max_index_memory=2**28)
    assert small_memory == f"IVF{ivf_clusters(400_000)},Flat" == "IVF2048,Flat"
    assert choose_index_key(50, 8, exact_threshold=10) == "HNSW32"


@pytest.mark.parametrize("key", ["HNSW8", "IVF4,Flat"])
def test_approximate_indexes_build_and_find_themselves(key):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_faiss_index(vectors, key)
    ids = index.search(vectors[:20], 1)[1][:, 0]
    assert (ids == np.arange(20)).mean() >= 0.9


def test_cli_build_and_errors(tmp_path, model_spec, capsys):
    gallery = make_gallery(tmp_path / "gallery", per_class=1, flat=False)
    out = tmp_path / "index"
    argv = ["build", "--model", model_spec, "--gallery", str(gallery), "--out", str(out), "--workers", "0"]
    assert cli(argv) == 0
    assert json.loads((out / "info.json").read_text())["count"] == 3
    assert cli([*argv[:-2], "--shard", "3/2"]) == 2
    assert "shard" in capsys.readouterr().err
    (out / "metadata.jsonl").unlink()
    with pytest.raises(IndexLoadError):
        load_index(out)
