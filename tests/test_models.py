import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipforget.core.errors import ModelLoadError, WeightsNotFoundError
from clipforget.models.encode import encode_images, text_classifier
from clipforget.models.factory import create_model, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent


def test_embedded_checkpoint_round_trip(bundle, cifar_small, tmp_path):
    save_checkpoint(bundle, tmp_path / "ckpt", metadata={"note": "test"})
    loaded = load_checkpoint(tmp_path / "ckpt")
    images = cifar_small.images[:8]
    assert torch.allclose(encode_images(bundle, images), encode_images(loaded, images), atol=1e-5)
    assert torch.allclose(text_classifier(bundle, ["cat", "dog"]), text_classifier(loaded, ["cat", "dog"]), atol=1e-5)
    # the frozen text transformer is not duplicated into checkpoints
    size_mb = (tmp_path / "ckpt" / "open_clip_model.safetensors").stat().st_size / 2**20
    assert size_mb < 40


def test_truncated_checkpoint_is_refused(bundle, tmp_path):
    folder = save_checkpoint(bundle, tmp_path / "ckpt")
    weights = folder / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError):
        load_checkpoint(folder)


def test_unknown_specs_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown model spec"):
        create_model("not-a-model")
    with pytest.raises(ModelLoadError, match="no architecture"):
        create_model("NoSuchNet:openai")
    with pytest.raises(ModelLoadError, match="neither a weights file nor a pretrained tag"):
        create_model("RN50:nonsense-tag")


def test_missing_pretrained_weights_say_how_to_provide_them(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        create_model("RN50:openai", cache=tmp_path)
    message = str(info.value)
    assert "RN50:openai" in message and "--model RN50:/path/to/weights.pt" in message and str(tmp_path) in message


def test_cli_reports_missing_weights_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "clipforget", "run", "cifar10", "--forget-class", "airplane", "--model",
         "RN50:openai", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 2
    assert "error: pretrained weights for RN50:openai are not available" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cpu_autocast_follows_the_processor_and_the_override(bundle, monkeypatch):
    from clipforget.core import devices
    from clipforget.models.encode import autocast

    monkeypatch.setenv("CLIPFORGET_CPU_AUTOCAST", "")
    native = devices.cpu_has_native_bf16()
    assert devices.autocast_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    for choice, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        monkeypatch.setenv("CLIPFORGET_CPU_AUTOCAST", choice)
        assert devices.autocast_dtype("cpu") == dtype
        with autocast(bundle):
            out = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
        assert out.dtype == dtype


def test_a_run_recorded_under_a_renamed_bundled_name_gets_its_own_base_model(tmp_path):
    """A bundled name that moved to another model: a run pairs with the bundled model whose config has its
    architecture (a run recorded under an older name of today's ``embedded`` opens as ``embedded``)."""
    from clipforget.models.factory import bundled_name_for, load_config

    today = load_config("embedded")
    assert bundled_name_for("embedded-v3", today) == "embedded"
    assert bundled_name_for("embedded", today) == "embedded"
    assert bundled_name_for("RN50:openai", today) == "RN50:openai"
    assert bundled_name_for(str(tmp_path / "gone"), today) == str(tmp_path / "gone")  # a folder is never renamed


@pytest.mark.parametrize("recorded", ["embedded-v2", "embedded"])
def test_a_run_made_on_a_retired_bundled_model_is_refused(tmp_path, recorded):
    """A run made on a bundled model this version no longer ships (its checkpoint's architecture is no bundled
    model's, whether it recorded the retired name or a name that now holds another model) is refused with "run it
    again", never paired with today's model as its original, and never reused by ``bench``."""
    import copy
    import json

    from clipforget.methods.ours import ThreeStageConfig
    from clipforget.models.factory import CONFIG_FILE, load_config
    from clipforget.pipeline.folder import RunFolder

    retired = copy.deepcopy(load_config("embedded"))
    retired["model_cfg"]["vision_cfg"]["image_size"] = 96  # the 96 px model bundled before
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / CONFIG_FILE).write_text(json.dumps(retired))
    (run / RunFolder.CONFIG).write_text(json.dumps({"method": "ours", "model": recorded}))
    (run / RunFolder.STATUS).write_text(json.dumps({"state": "done"}))
    (run / RunFolder.METRICS).write_text("{}")
    folder = RunFolder(run)
    assert folder.base_model_retired()
    with pytest.raises(ModelLoadError, match=f"bundled model '{recorded}', which this version of clipforget no "
                       "longer ships.*run it again"):
        folder.original_model()
    assert folder.differences(folder.model_spec, ThreeStageConfig())[:1] in (["model"], ["model_weights"])

    (run / "model" / CONFIG_FILE).write_text(json.dumps(load_config("embedded")))  # today's architecture
    assert not RunFolder(run).base_model_retired()
