"""The PIL styles: a line drawing must show the object at the model's size, not only at the source's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from clipforget.data.styles import DRAWING_SIZE, STYLES, stylize


def _disc(size: int, contrast: int) -> torch.Tensor:
    """A light disc (radius a quarter of ``size``) on a grey ground, as uint8 ``1,3,size,size``."""
    img = Image.new("L", (32, 32), 110)
    ImageDraw.Draw(img).ellipse((8, 8, 24, 24), fill=110 + contrast)
    img = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)  # a small source upscaled, like CIFAR-10
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None]


@pytest.mark.parametrize("size", [144, 224])
def test_bw_drawing_of_an_upscaled_image_outlines_the_object(size: int) -> None:
    drawing = stylize(_disc(size, contrast=40), "black-and-white drawing")[0, 0].numpy()
    assert set(np.unique(drawing)) <= {0, 255}
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    outline = np.abs(radius - size / 4) <= size / 24
    inside_frame = np.zeros_like(outline)
    inside_frame[size // 20 : -size // 20, size // 20 : -size // 20] = True
    black = drawing == 0
    # The per-pixel renderer draws nothing here (its edge floor is above a 40-level step spread over 4.5 px).
    assert black[outline].mean() > 0.15, "the disc's outline is not drawn"
    assert black[inside_frame & ~outline].mean() < 0.02, "lines away from the outline"


@pytest.mark.parametrize("style", STYLES[1:])
def test_styles_keep_shape_and_dtype(style: str) -> None:
    images = _disc(144, contrast=80).repeat(2, 1, 1, 1)
    out = stylize(images, style)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)


def test_small_images_are_drawn_at_their_own_size() -> None:
    """At or below DRAWING_SIZE nothing is resized: the bundled CIFAR model's training pixels stay as they were."""
    from clipforget.data.styles import _bw_drawing, _bw_drawing_pixels

    img = Image.fromarray(_disc(DRAWING_SIZE // 2, contrast=140)[0].permute(1, 2, 0).numpy())
    assert np.array_equal(np.asarray(_bw_drawing(img)), np.asarray(_bw_drawing_pixels(img)))


def test_renderer_1_is_the_per_pixel_drawing_embedded_v2_was_trained_on() -> None:
    from clipforget.data.styles import _bw_drawing_pixels

    images = _disc(144, contrast=40)
    old = stylize(images, "black-and-white drawing", version=1)[0].permute(1, 2, 0).numpy()
    expected = np.asarray(_bw_drawing_pixels(Image.fromarray(images[0].permute(1, 2, 0).numpy())))
    assert np.array_equal(old, expected)
    new = stylize(images, "black-and-white drawing")[0].permute(1, 2, 0).numpy()
    assert (new == 0).sum() > 2 * (old == 0).sum()  # renderer 2 draws the outline renderer 1 misses
    for style in ("sketch", "poster art"):  # only the line drawing changed between the versions
        assert torch.equal(stylize(images, style, version=1), stylize(images, style))


def test_recipe_defaults_are_the_bundled_weights_recipe() -> None:
    """`pretrain embedded` with no flags rebuilds assets/embedded; older builds keep their config keys."""
    import json
    from pathlib import Path

    from clipforget.pretraining.embedded_v3.config import LitConfig

    config = json.loads((Path(__file__).parents[1] / "assets" / "embedded" / "open_clip_config.json").read_text())
    assert LitConfig().styles_version == 2
    assert LitConfig().key() == config["clipforget"]["config_key"]
    # the bundle of sessions 12-17 (renderer 1, 2,000 / 300 images per class): docs/decisions.md D29, D30
    assert LitConfig(cifar_per_class=2000, style_per_class=300, styles_version=1).key() == "a20e03a29b71"


def test_unknown_style_or_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        stylize(_disc(32, 40), "oil painting")
    with pytest.raises(ValueError, match="unknown styles version"):
        stylize(_disc(32, 40), "sketch", version=3)
