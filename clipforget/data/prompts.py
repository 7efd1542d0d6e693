"""Prompt templates and caption vocabulary (data, not code paths)."""

from __future__ import annotations

from .cifar10 import CIFAR10_CLASSES
from .styles import STYLES

# Zero-shot evaluation templates for the embedded model: style-neutral, averaged per class.
EMBEDDED_TEMPLATES = ("a picture of a {}.", "an image of a {}.", "a {}.", "a small {}.", "a blurry image of the {}.")

# For open_clip models (RN50 & co): a short subset of CLIP's ImageNet templates.
OPENCLIP_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.",
                      "a photo of the small {}.", "a cropped photo of a {}.", "art of the {}.", "a sketch of a {}.")

STYLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.", "a photograph of the {}."),
    "sketch": ("a sketch of a {}.", "a pencil sketch of the {}."),
    "poster art": ("poster art of a {}.", "a colorful poster of the {}."),
    "black-and-white drawing": ("a black-and-white drawing of a {}.", "a black and white line drawing of the {}."),
}
assert set(STYLE_TEMPLATES) == set(STYLES)

SYNONYMS: dict[str, tuple[str, ...]] = {
    "airplane": ("airplane", "plane"),
    "automobile": ("automobile", "car"),
    "ship": ("ship", "boat"),
}


def fill(template: str, subject: str) -> str:
    """Insert ``subject`` into ``template``, fixing the article ("a airplane" -> "an airplane")."""
    text = template.format(subject)
    if subject[:1].lower() in "aeiou":
        for article in ("a ", "A "):
            text = text.replace(f"{article}{subject}", f"{article[0]}n {subject}")
    return text


def templates_for(spec_config: dict) -> tuple[str, ...]:
    """Zero-shot templates that suit a model (embedded vs open_clip)."""
    return EMBEDDED_TEMPLATES if spec_config.get("frozen_prefixes") else OPENCLIP_TEMPLATES


def caption_bank() -> tuple[list[str], list[tuple[str, str, str]]]:
    """All pre-training captions and, for each, (subject, kind, style); kind is class or coarse, style '' if neutral."""
    captions, meta = [], []
    subjects = [(name, c, "class") for c in CIFAR10_CLASSES for name in SYNONYMS.get(c, (c,))]
    subjects += [("vehicle", "vehicle", "coarse"), ("animal", "animal", "coarse")]
    for name, target, kind in subjects:
        for template in EMBEDDED_TEMPLATES:
            captions.append(fill(template, name))
            meta.append((target, kind, ""))
        for style, templates in STYLE_TEMPLATES.items():
            for template in templates:
                captions.append(fill(template, name))
                meta.append((target, kind, style))
    return captions, meta
