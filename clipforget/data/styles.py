"""Image styles made with PIL (the paper used Stable Diffusion): photo, sketch, poster art, black-and-white drawing."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

STYLES = ("photo", "sketch", "poster art", "black-and-white drawing")
# Line drawings are drawn at most DRAWING_SIZE px on a side and scaled back: PIL's edge filter works in pixels, so a
# drawing made at the image's own size is near-blank for upscaled small sources (CIFAR-10 at 144 px; decisions D29).
# STYLES_VERSION names this renderer in the caches and configs of what was drawn with it (the bundled `embedded`, D30).
STYLES_VERSION = 2
DRAWING_SIZE = 64


def _drawn_small(draw: Callable[[Image.Image], Image.Image], img: Image.Image) -> Image.Image:
    """``draw(img)``, made at most :data:`DRAWING_SIZE` px on a side and resized back to ``img.size``."""
    if max(img.size) <= DRAWING_SIZE:
        return draw(img)
    scale = DRAWING_SIZE / max(img.size)
    small_size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    small = img.resize(small_size, Image.Resampling.LANCZOS)
    return draw(small).resize(img.size, Image.Resampling.BILINEAR)


def _sketch(img: Image.Image) -> Image.Image:
    gray = ImageOps.grayscale(img)
    blurred = ImageOps.invert(gray).filter(ImageFilter.GaussianBlur(2))
    g = np.asarray(gray, dtype=np.float32)
    b = np.asarray(blurred, dtype=np.float32)
    dodge = np.clip(g * 255.0 / np.maximum(255.0 - b, 1.0), 0, 255).astype(np.uint8)
    return Image.fromarray(dodge).convert("RGB")


def _poster(img: Image.Image) -> Image.Image:
    vivid = ImageEnhance.Color(img).enhance(2.2)
    vivid = ImageEnhance.Contrast(vivid).enhance(1.4)
    return ImageOps.posterize(vivid, 2)


def _edges_thresholded(img: Image.Image) -> Image.Image:
    edges = ImageOps.grayscale(img).filter(ImageFilter.SMOOTH).filter(ImageFilter.FIND_EDGES)
    arr = np.asarray(edges, dtype=np.uint8)
    threshold = max(24, int(np.percentile(arr, 80)))
    return Image.fromarray(np.where(arr > threshold, 0, 255).astype(np.uint8)).convert("RGB")


def _bw_drawing(img: Image.Image) -> Image.Image:
    drawn = np.asarray(_drawn_small(_edges_thresholded, img).convert("L"))
    return Image.fromarray(np.where(drawn < 128, 0, 255).astype(np.uint8)).convert("RGB")  # black and white again


_STYLE_FUNCTIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "sketch": _sketch,
    "poster art": _poster,
    "black-and-white drawing": _bw_drawing,
}


def stylize(images: torch.Tensor, style: str) -> torch.Tensor:
    """Apply ``style`` to uint8 ``N,3,H,W`` images."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    if style == "photo":
        return images.clone()
    fn = _STYLE_FUNCTIONS[style]
    out = [
        torch.from_numpy(np.asarray(fn(Image.fromarray(img.permute(1, 2, 0).numpy())), dtype=np.uint8).copy())
        for img in images
    ]
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()
