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
    # Drawn at 144 px the edge floor is above a 40-level step spread over 4.5 px: nothing would be drawn.
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
    from clipforget.data.styles import _bw_drawing, _edges_thresholded

    img = Image.fromarray(_disc(DRAWING_SIZE // 2, contrast=140)[0].permute(1, 2, 0).numpy())
    assert np.array_equal(np.asarray(_bw_drawing(img)), np.asarray(_edges_thresholded(img)))


def test_recipe_defaults_are_the_bundled_weights_recipe() -> None:
    """`pretrain embedded` with no flags rebuilds assets/embedded."""
    import json
    from pathlib import Path

    from clipforget.pretraining.embedded.config import LitConfig

    config = json.loads((Path(__file__).parents[1] / "assets" / "embedded" / "open_clip_config.json").read_text())
    assert LitConfig().key() == config["clipforget"]["config_key"]


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        stylize(_disc(32, 40), "oil painting")
