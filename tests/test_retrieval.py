"""clipforget.retrieval: exact search on arrays and FAISS, text -> image, before/after comparison."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_MODEL

from clipforget.core.errors import IndexLoadError
from clipforget.models.encode import encode_text
from clipforget.models.factory import create_model, find_bundled_checkpoint, new_model, save_checkpoint
from clipforget.retrieval.index import EMBEDDINGS_FILE, load_index
from clipforget.retrieval.search import Hit, compare, rank_of, search, text_to_image
from index_builder.build import BuildConfig, build
from index_builder.indexing import build_faiss_index


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_array_search_is_exact_topk_best_first():
    rng = np.random.default_rng(0)
    emb, queries = _unit(rng, 500, 32), _unit(rng, 3, 32)
    scores, ids = search(emb, queries, 10)
    expected = np.argsort(-(queries @ emb.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, expected)
    assert np.all(np.diff(scores, axis=1) <= 0)
    _, one_ids = search(torch.from_numpy(emb).half(), torch.from_numpy(queries[0]), 10)  # 1-D query, fp16 rows
    assert one_ids.shape == (1, 10) and len(set(one_ids[0]) & set(expected[0])) >= 9
    assert search(emb[:4], queries, 10)[1].shape == (3, 4)  # k clipped to the gallery


def test_array_search_agrees_with_faiss_and_breaks_ties_by_id():
    rng = np.random.default_rng(1)
    emb, queries = _unit(rng, 300, 16), _unit(rng, 4, 16)
    index = build_faiss_index(emb, "Flat")
    np.testing.assert_array_equal(search(index, queries, 7)[1], search(emb, queries, 7)[1])
    tied = np.repeat(emb[:1], 5, axis=0)
    assert search(tied, emb[0], 3)[1][0].tolist() == [0, 1, 2]


def test_rank_of_matches_the_full_ranking():
    rng = np.random.default_rng(2)
    emb, query = _unit(rng, 200, 8), _unit(rng, 1, 8)[0]
    order = search(emb, query, 200)[1][0]
    picks = [int(order[0]), int(order[17]), int(order[-1])]
    assert rank_of(emb, query, picks) == [1, 18, 200]


def _hit(i: int, rank: int, path: str) -> Hit:
    return Hit(rank=rank, id=i, score=1.0 - rank / 100, path=path, label=path.split("/")[-2])


def test_compare_reports_left_entered_and_subgroup_share():
    before = [_hit(i, r, f"/g/{'airplane' if i < 3 else 'ship'}/{i}.jpg") for r, i in enumerate([0, 1, 2, 3], 1)]
    after = [_hit(i, r, f"/g/{'airplane' if i < 3 else 'ship'}/{i}.jpg") for r, i in enumerate([3, 7, 8, 2], 1)]
    diff = compare(before, after, subgroup="airplane/")
    assert [h.id for h in diff.left] == [0, 1]
    assert [h.id for h in diff.entered] == [7, 8]
    assert diff.share_before == 0.75 and diff.share_after == 0.25
    assert diff.share_drop == pytest.approx(1 - 0.25 / 0.75)
    assert diff.rank_change[3] == (4, 1) and diff.rank_change[0] == (1, None) and diff.rank_change[7] == (None, 2)
    by_label = compare(before, after, subgroup=lambda h: h.label == "ship")
    assert by_label.share_before == 0.25 and by_label.share_after == 0.75
    assert compare(before, before).share_before is None and compare(before, before).left == []
    assert compare(before, after, subgroup="airplane\\").share_before == 0.75  # Windows-style separator


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    """A tiny index over synthetic images, built with the embedded model (or a fresh one)."""
    from test_index_builder import make_gallery

    root = tmp_path_factory.mktemp("retrieval")
    if find_bundled_checkpoint(TEST_MODEL) is not None:
        spec = TEST_MODEL
    else:
        torch.manual_seed(0)
        spec = str(save_checkpoint(new_model(TEST_MODEL), root / "model"))
    gallery = make_gallery(root / "gallery", per_class=3)
    out = build([gallery], root / "index", BuildConfig(model=spec, workers=0, progress=False))
    return create_model(spec), load_index(out)


def test_text_to_image_ranks_the_gallery_and_accepts_other_embeddings(small_index):
    bundle, gallery = small_index
    hits = text_to_image(bundle, gallery, "a photo of an airplane", k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    query = encode_text(bundle, ["a photo of an airplane"])
    assert [h.id for h in hits] == search(gallery.embeddings, query, 5)[1][0].tolist()
    assert hits[0].path == gallery.records[hits[0].id]["path"]
    # ranking another model's view of the same rows: reversed rows give the mirrored ids
    flipped = np.ascontiguousarray(np.asarray(gallery.embeddings, dtype=np.float32)[::-1])
    other = text_to_image(bundle, gallery, "a photo of an airplane", k=5, embeddings=flipped)
    assert [h.id for h in other] == [len(gallery) - 1 - h.id for h in hits]


def test_load_index_refuses_incomplete_or_inconsistent_folders(small_index, tmp_path):
    _, gallery = small_index
    with pytest.raises(IndexLoadError, match="not a finished index"):
        load_index(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in Path(gallery.path).iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    np.save(broken / EMBEDDINGS_FILE, np.asarray(gallery.embeddings[:-1]))
    with pytest.raises(IndexLoadError, match="inconsistent"):
        load_index(broken)
    assert json.loads((broken / "info.json").read_text())["count"] == len(gallery)
