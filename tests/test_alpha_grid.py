"""index_builder.alpha_grid: stage split of the image tower, grid == original at 0 and == full re-encode at alpha."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_MODEL
from torch import nn

from clipforget.data.images import read_images
from clipforget.models.factory import create_model, find_bundled_checkpoint, new_model, save_checkpoint
from clipforget.models.fold import fold_batchnorm
from clipforget.models.layers import VisualOnly
from clipforget.models.prefix import flatten_stages, sequential_stages
from clipforget.models.weights import clone_state
from clipforget.pipeline.folder import RunFolder
from clipforget.retrieval.alpha_grid import AlphaGrid
from clipforget.retrieval.index import load_index
from clipforget.retrieval.search import search
from clipforget.stages.restore import souped_tower
from index_builder.alpha_grid import AlphaGridConfig, SplitForward, compute_alpha_grid
from index_builder.build import BuildConfig, build

ALPHAS = (0.0, 0.35, 1.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fake finished run (a late layer perturbed, plus EMA-like rounding noise in the stem) and a tiny index."""
    from test_index_builder import make_gallery

    root = tmp_path_factory.mktemp("alpha_grid")
    if find_bundled_checkpoint(TEST_MODEL) is not None:
        spec = TEST_MODEL
    else:
        torch.manual_seed(0)
        spec = str(save_checkpoint(new_model(TEST_MODEL), root / "base"))
    original = create_model(spec)
    theta_0 = clone_state(original.model.visual)
    theta_u = clone_state(original.model.visual)
    generator = torch.Generator().manual_seed(1)
    key = "layer4.1.bn3.weight"  # the residual branch's output scale (open_clip zero-initialises it)
    theta_u[key] += 0.5 + 0.1 * torch.randn(theta_u[key].shape, generator=generator)
    theta_u["conv1.weight"] = theta_u["conv1.weight"] * (1 + 3e-7)  # below rel_tol: rounding noise
    run = root / "run"
    unlearned = copy.deepcopy(original)
    unlearned.model.visual.load_state_dict(theta_u)
    save_checkpoint(unlearned, run / "unlearned")
    save_checkpoint(unlearned, run / "model")
    (run / "status.json").write_text(json.dumps({"state": "done"}))
    (run / "config.json").write_text(json.dumps({"model": spec}))
    (run / "metrics.json").write_text("{}")
    gallery = make_gallery(root / "gallery", per_class=3)
    index = build([gallery], root / "index", BuildConfig(model=spec, workers=0, batch_size=4, progress=False))
    cfg = AlphaGridConfig(alphas=ALPHAS, batch_size=4, workers=0, cache_bytes=1)  # 1 byte: one chunk per batch
    folder = compute_alpha_grid(original, theta_u, index, RunFolder(run).grid_dir(index.name), cfg)
    return {"original": original, "theta_0": theta_0, "theta_u": theta_u, "run": run, "index": index,
            "folder": folder}


def _full_encode(bundle, visual: nn.Module, paths: list[str], folded: bool = True) -> np.ndarray:
    """A full re-encode, with the tower the index ran: BatchNorm folded into the convolutions (D21)."""
    from clipforget.models.encode import encode_images

    visual = fold_batchnorm(visual) if folded else visual
    images = read_images([Path(p) for p in paths], bundle.image_size, [""] * len(paths)).images
    return encode_images(bundle, images, batch_size=4, model=VisualOnly(visual)).numpy()


def test_modified_resnet_splits_into_sequential_stages():
    bundle = new_model(TEST_MODEL)
    visual = bundle.model.visual.eval()
    x = torch.randn(2, 3, bundle.image_size, bundle.image_size)
    stages = sequential_stages(visual, x)
    assert stages is not None
    names = [n for n, _ in stages]
    assert names[:3] == ["conv1", "bn1", "act1"] and names[-1] == "attnpool" and "layer3.1" in names
    with torch.no_grad():
        h = x
        for _, stage in stages:
            h = stage(h)
        assert torch.equal(h, visual(x))


def test_timm_tower_splits_into_blocks_and_residual_blocks_stay_whole():
    from open_clip.timm_model import TimmModel

    tower = TimmModel("efficientnet_lite0", 32, image_size=32, pool="avg", proj="linear").eval()
    x = torch.randn(2, 3, 32, 32)
    stages = sequential_stages(tower, x)
    names = [n for n, _ in stages]
    assert names[:2] == ["trunk.conv_stem", "trunk.bn1"] and names[-1] == "head.proj"
    assert "trunk.blocks.5.3" in names and not any(n.startswith("trunk.blocks.5.3.") for n in names)
    with torch.no_grad():
        h = x
        for _, stage in stages:
            h = stage(h)
        torch.testing.assert_close(h, tower(x))


def test_non_sequential_towers_are_not_split():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b(self.a(x)) + x

    class WithOwnWeight(nn.Sequential):
        pass

    assert [n for n, _ in flatten_stages(nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 4))))] \
        == ["0", "1.0", "1.1"]
    assert sequential_stages(Residual(), torch.randn(2, 4)) is None
    tower = WithOwnWeight(nn.Linear(4, 4))
    tower.scale = nn.Parameter(torch.ones(1))
    assert sequential_stages(tower, torch.randn(2, 4)) is None


def test_split_starts_at_the_first_changed_stage(setup):
    split = SplitForward(setup["original"], setup["theta_u"], setup["theta_0"])
    assert split.sequential and split.split_name == "layer4.1"
    assert split.changed == ["layer4.1.bn3.weight"] and split.negligible == ["conv1.weight"]
    info = json.loads((setup["folder"] / "grid.json").read_text())
    assert info["first_recomputed_stage"] == "layer4.1" and info["alphas"] == list(ALPHAS)


def test_vit_towers_are_cut_between_residual_blocks(monkeypatch):
    """A ViT's grid runs only the blocks from the first changed one per alpha, and equals a full encode of the soup."""
    from clipforget.models.encode import encode_images
    from clipforget.models.factory import load_config, model_from_config
    from clipforget.models.weights import soup

    monkeypatch.setenv("CLIPFORGET_CPU_AUTOCAST", "fp32")
    config = copy.deepcopy(load_config(TEST_MODEL))
    config["model_cfg"]["vision_cfg"] = {"layers": 4, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32}
    config["preprocess_cfg"]["size"] = 32
    torch.manual_seed(0)
    bundle = model_from_config(config, "tiny-vit")
    theta_0, theta_u = clone_state(bundle.model.visual), clone_state(bundle.model.visual)
    key = "transformer.resblocks.2.mlp.c_fc.weight"
    theta_u[key] = theta_u[key] + 0.2 * torch.randn(theta_u[key].shape, generator=torch.Generator().manual_seed(1))
    split = SplitForward(bundle, theta_u, theta_0)
    assert split.cut.kind == "vit" and split.split_name == "transformer.resblocks.2"
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    h, _ = split.prefix(images)
    for alpha in (0.0, 0.6):
        split.set_alpha(alpha)
        expected = encode_images(bundle.with_visual_state(soup(theta_u, theta_0, alpha)), images)
        torch.testing.assert_close(split.suffix(h), expected, atol=1e-4, rtol=0)
    assert (split.suffix(h) - encode_images(bundle, images)).abs().max() > 1e-2  # the change is visible


def test_grid_at_zero_is_the_original_model(setup):
    grid = AlphaGrid.load(setup["run"], setup["index"].name)
    gallery = load_index(setup["index"])
    assert len(grid) == len(gallery)
    np.testing.assert_allclose(grid.embeddings(0.0), gallery.embeddings.astype(np.float32), atol=2e-3)
    assert gallery.info["batchnorm_folded"] and json.loads((setup["folder"] / "grid.json").read_text())[
        "batchnorm_folded"]  # the test model has BatchNorms: the index and its grid both fold them
    direct = _full_encode(setup["original"], setup["original"].model.visual, gallery.paths)
    np.testing.assert_allclose(grid.embeddings(0.0), direct, atol=2e-3)


@pytest.mark.parametrize("alpha", [0.35, 1.0])
def test_grid_equals_full_re_encode_with_the_soup(setup, alpha):
    grid = AlphaGrid.load(setup["run"], setup["index"].name)
    gallery = load_index(setup["index"])
    visual = souped_tower(setup["original"].model.visual, setup["theta_u"], setup["theta_0"], alpha)
    expected = _full_encode(setup["original"], visual, gallery.paths)
    got = grid.embeddings(alpha)
    # bf16 autocast: the stem's 3e-7 "noise" may flip a bf16 rounding in the full forward, the cached prefix skips it
    np.testing.assert_allclose(got, expected, atol=5e-3)
    assert np.abs(got - expected).mean() < 5e-4
    assert np.abs(got - grid.embeddings(0.0)).max() > 1e-2  # the perturbation is visible, so the check can fail


def test_lookup_uses_the_nearest_grid_point_and_search_matches(setup):
    grid = AlphaGrid.load(setup["run"], setup["index"].name)
    assert grid.nearest(0.3) == 1 and grid.nearest(0.9) == 2 and grid.nearest(-1) == 0
    assert grid.embeddings(0.3) is grid.embeddings(0.35)  # cached
    query = grid.embeddings(0.35)[:2]
    np.testing.assert_array_equal(grid.search(query, 0.35, 4)[1], search(grid.faiss_index(0.35), query, 4)[1])
    assert AlphaGrid.available(setup["run"]) == [setup["index"].name]


def test_existing_grid_is_reused_and_unfinished_runs_refused(setup, tmp_path):
    from clipforget.core.errors import ModelLoadError

    cfg = AlphaGridConfig(alphas=ALPHAS, workers=0)
    stamp = (setup["folder"] / "grid.json").stat().st_mtime_ns
    compute_alpha_grid(setup["original"], setup["theta_u"], setup["index"], setup["folder"], cfg)
    assert (setup["folder"] / "grid.json").stat().st_mtime_ns == stamp
    (tmp_path / "status.json").write_text(json.dumps({"state": "failed"}))
    with pytest.raises(ModelLoadError, match="not finished"):
        RunFolder(tmp_path).unlearned_state()
    with pytest.raises(FileNotFoundError):
        AlphaGrid.load(tmp_path, "nothing")


def test_cancelled_grid_leaves_the_existing_grid_and_no_partial_file(setup):
    import threading

    from clipforget.core.errors import RunCancelled

    cfg = AlphaGridConfig(alphas=ALPHAS, workers=0)
    before = (setup["folder"] / "embeddings.f16.npy").read_bytes()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RunCancelled):
        compute_alpha_grid(setup["original"], setup["theta_u"], setup["index"], setup["folder"], cfg, overwrite=True,
                           cancel=cancel)
    assert (setup["folder"] / "embeddings.f16.npy").read_bytes() == before
    assert not list(setup["folder"].glob(".*partial"))
    assert AlphaGrid.load(setup["run"], setup["index"].name).alphas.tolist() == list(ALPHAS)


def test_pooled_query_attention_equals_open_clip_attention_pool():
    from open_clip.modified_resnet import AttentionPool2d

    from clipforget.models.layers import PooledQueryAttention

    torch.manual_seed(0)
    pool = AttentionPool2d(spacial_dim=2, embed_dim=64, num_heads=4, output_dim=16).eval()
    x = torch.randn(5, 64, 2, 2)
    with torch.no_grad():
        expected, got = pool(x), PooledQueryAttention(pool)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        pool.q_proj.weight.mul_(2.0)  # reads the pool's live parameters (theta(alpha) is loaded into the tower)
        torch.testing.assert_close(PooledQueryAttention(pool)(x), pool(x), rtol=1e-5, atol=1e-5)


def test_audit_uses_the_grid_or_encodes_the_same_embeddings(setup, tmp_path):
    from clipforget.cli import main
    from clipforget.retrieval.audit import audit_prompt
    from index_builder.alpha_grid import embeddings_at

    gallery = load_index(setup["index"])
    from_grid = embeddings_at(setup["original"], setup["theta_u"], gallery, 0.35, setup["folder"])
    encoded = embeddings_at(setup["original"], setup["theta_u"], gallery, 0.35, None, batch_size=4)
    np.testing.assert_allclose(encoded, from_grid, atol=5e-3)
    subgroup = "/" + gallery.labels[0] + "/"
    audit = audit_prompt(setup["original"], gallery, from_grid, "a photo of an airplane", 5, subgroup, ("airliner",))
    before, after = audit.subgroup_in_top_k
    assert before == sum(subgroup in h.path for h in audit.comparison.before)
    assert after == sum(subgroup in h.path for h in audit.comparison.after)
    assert [t["label"] for t in audit.tracked] == ["airliner"] and 1 <= audit.tracked[0]["rank_after"] <= len(gallery)
    out = tmp_path / "audit.json"
    assert main(["audit", "--run", str(setup["run"]), "--index", str(setup["index"]), "--prompt", "a cat",
                 "--alpha", "1.0", "-k", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["alpha"] == 1.0 and len(report["prompts"][0]["top_after"]) == 4
    assert main(["audit", "--run", str(tmp_path), "--index", str(setup["index"]), "--prompt", "a cat"]) == 2


def test_later_grids_read_the_activations_stored_with_the_index(setup, tmp_path):
    """The fixture's grid decoded the gallery and stored what enters its first recomputed stage next to the index;
    a second grid reads those instead of decoding (equal to fp16 rounding), and a stale store is ignored."""
    stored = setup["index"] / "activations" / "layer4.1.f16.npy"
    assert stored.is_file() and json.loads(stored.with_name("layer4.1.json").read_text())["stage"] == "layer4.1"
    assert json.loads((setup["folder"] / "grid.json").read_text())["activations"] == "decoded"
    cfg = AlphaGridConfig(alphas=ALPHAS, batch_size=4, workers=0)
    again = compute_alpha_grid(setup["original"], setup["theta_u"], setup["index"], tmp_path / "again", cfg)
    assert json.loads((again / "grid.json").read_text())["activations"] == "stored at layer4.1"
    first, second = AlphaGrid(setup["folder"]), AlphaGrid(again)
    for alpha in ALPHAS:
        np.testing.assert_allclose(second.embeddings(alpha), first.embeddings(alpha), atol=2e-3)
    info_path = stored.with_name("layer4.1.json")
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "weights": "another model"}))
    try:
        other = compute_alpha_grid(setup["original"], setup["theta_u"], setup["index"], tmp_path / "other", cfg)
        assert json.loads((other / "grid.json").read_text())["activations"] == "decoded"
    finally:
        assert json.loads(info_path.read_text())["weights"] != "another model"  # the decode wrote a fresh store


def test_partial_grid_is_readable_at_its_first_alpha_and_is_completed_later(setup, tmp_path):
    cfg = AlphaGridConfig(alphas=ALPHAS, batch_size=4, workers=0)
    out = tmp_path / "partial"
    compute_alpha_grid(setup["original"], setup["theta_u"], setup["index"], out, cfg, first=[0.3],
                       stop_after_first=True)
    grid = AlphaGrid(out)
    assert grid.info["ready"] == [1] and not grid.complete and grid.ready_alphas == [0.35]
    assert grid.nearest(0.0) == 1 and grid.nearest(1.0) == 1  # snaps to the one ready point
    np.testing.assert_allclose(grid.embeddings(0.35), AlphaGrid(setup["folder"]).embeddings(0.35), atol=2e-3)
    compute_alpha_grid(setup["original"], setup["theta_u"], setup["index"], out, cfg)  # resumes the other points
    assert grid.nearest(0.0) == 0 and grid.complete  # the open reader sees them without reopening
    assert "ready" not in json.loads((out / "grid.json").read_text())
    for alpha in ALPHAS:
        np.testing.assert_allclose(grid.embeddings(alpha), AlphaGrid(setup["folder"]).embeddings(alpha), atol=2e-3)


def test_a_cancelled_fill_keeps_the_points_already_done(setup, tmp_path):
    import threading

    from clipforget.core.errors import RunCancelled

    cfg = AlphaGridConfig(alphas=ALPHAS, batch_size=4, workers=0)
    out = tmp_path / "cancelled"
    cancel = threading.Event()

    def stop_after_two(stage: str, fraction: float, message: str) -> None:
        if fraction >= 2 / 3 - 1e-9:
            cancel.set()

    with pytest.raises(RunCancelled):
        compute_alpha_grid(setup["original"], setup["theta_u"], setup["index"], out, cfg, stop_after_two,
                           cancel=cancel, first=[1.0])
    assert AlphaGrid(out).info["ready"] == [0, 2]  # alpha 1.0 first, then 0.0; 0.35 was stopped
    assert not list(out.glob(".*partial"))


def test_an_index_built_with_activations_serves_grids_cut_later(setup, tmp_path):
    """``BuildConfig.activations_at`` stores the input of an earlier stage while indexing (no second decode); a grid
    whose first changed stage comes later runs the unchanged stages in between once and matches the decoded grid."""
    from test_index_builder import make_gallery

    spec = setup["original"].spec
    gallery = make_gallery(tmp_path / "gallery", per_class=3)
    index = build([gallery], tmp_path / "index", BuildConfig(model=spec, workers=0, batch_size=4, progress=False,
                                                             activations_at="layer3.0"))
    stored = np.load(index / "activations" / "layer3.0.f16.npy")
    assert len(stored) == len(load_index(index)) and stored.dtype == np.float16
    cfg = AlphaGridConfig(alphas=ALPHAS, batch_size=4, workers=0)
    out = compute_alpha_grid(setup["original"], setup["theta_u"], index, tmp_path / "grid", cfg)
    assert json.loads((out / "grid.json").read_text())["activations"] == "stored at layer3.0"
    for alpha in ALPHAS:
        np.testing.assert_allclose(AlphaGrid(out).embeddings(alpha), AlphaGrid(setup["folder"]).embeddings(alpha),
                                   atol=3e-3)
