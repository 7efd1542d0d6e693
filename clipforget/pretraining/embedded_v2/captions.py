"""The caption bank of the embedded recipe and, per training image, which captions are positives / left out.

Every training image belongs to a *group* (its Tiny-ImageNet wnid, CIFAR-10 class or monkeys10 species). A group has
a set of *names*: its class synonyms plus coarse words (``vocabulary``). The bank holds, for every name, the neutral
templates and the style templates. Caption ``k`` (name ``n_k``, style ``s_k`` or neutral) is a positive for an image of
group ``g`` in style ``s`` iff ``n_k`` is one of ``g``'s names and ``s_k`` is neutral or ``s``.

Some names are neither right nor wrong for a group: a CIFAR-10 "dog" may well be a golden retriever, a Tiny-ImageNet
gazelle is CIFAR's "deer" (``IMAGENET_TO_CIFAR10``). Those captions are *left out* of that image's softmax (masked)
instead of being pushed away as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clipforget.data.cifar10 import CIFAR10_CLASSES
from clipforget.data.imagenet import IMAGENET_TO_CIFAR10
from clipforget.data.prompts import EMBEDDED_TEMPLATES, STYLE_TEMPLATES, fill
from clipforget.data.styles import STYLES

from ..common import vocabulary as vocab

SOURCES = ("tiny", "cifar", "monkeys")


@dataclass
class Group:
    key: str  # "tiny:<wnid>", "cifar:<class>", "monkeys:<species>"
    names: tuple[str, ...]
    left_out: tuple[str, ...]
    imagenet: tuple[int, ...]  # ImageNet indices that show the group (the label part of the distillation target)


@dataclass
class CaptionBank:
    captions: list[str]
    name_of: np.ndarray  # caption -> name index
    style_of: np.ndarray  # caption -> style index, -1 for neutral templates
    names: list[str]
    groups: list[Group]
    positive: torch.Tensor  # bool G x Names
    left_out: torch.Tensor  # bool G x Names

    def group_index(self) -> dict[str, int]:
        return {g.key: i for i, g in enumerate(self.groups)}

    def batch_masks(self, groups: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positive, left_out)`` bool ``B x K`` for images of ``groups`` rendered in ``styles``."""
        name_of = torch.from_numpy(self.name_of)
        style_of = torch.from_numpy(self.style_of)
        pos = self.positive[groups][:, name_of]
        pos &= (style_of[None, :] < 0) | (style_of[None, :] == styles[:, None])
        return pos, self.left_out[groups][:, name_of]


def build_groups(imagenet: list[dict], tiny: list[dict], max_synonyms: int = 3) -> list[Group]:
    """The groups of the three training sources (Tiny-ImageNet wnids, CIFAR-10 classes, monkeys10 species)."""
    w2i = {c["wnid"]: int(c["index"]) for c in imagenet}
    cifar_of_index = {i: c for c, ids in IMAGENET_TO_CIFAR10.items() for i in ids}
    groups: list[Group] = []
    for c in tiny:
        index = w2i[c["wnid"]]
        names = list(vocab.synonyms(c["name"])[:max_synonyms]) + list(vocab.imagenet_coarse(index))
        left_out: list[str] = []
        if index in cifar_of_index:
            left_out = [n for n in vocab.CIFAR10_NAMES[cifar_of_index[index]] if n not in names]
        groups.append(Group(f"tiny:{c['wnid']}", tuple(dict.fromkeys(names)), tuple(left_out), (index,)))
    tiny_names_by_index = {w2i[c["wnid"]]: vocab.synonyms(c["name"])[:max_synonyms] for c in tiny}
    for cls in CIFAR10_CLASSES:
        names = list(vocab.CIFAR10_NAMES[cls]) + list(vocab.CIFAR10_COARSE[cls])
        finer = [n for i in IMAGENET_TO_CIFAR10[cls] for n in tiny_names_by_index.get(i, ())]
        finer += [n for i in IMAGENET_TO_CIFAR10[cls] for n in vocab.imagenet_coarse(i)]
        left_out = [n for n in dict.fromkeys(finer) if n not in names]
        groups.append(Group(f"cifar:{cls}", tuple(dict.fromkeys(names)), tuple(left_out), IMAGENET_TO_CIFAR10[cls]))
    for species, species_names in vocab.MONKEYS10_NAMES.items():
        names = list(species_names) + list(vocab.MONKEYS10_COARSE)
        groups.append(
            Group(f"monkeys:{species}", tuple(dict.fromkeys(names)), (), vocab.MONKEYS10_IMAGENET.get(species, ()))
        )
    # a name that is positive for one member of a family and absent from another is fine; a name that is positive
    # for a group can never be left out for it
    return groups


def build_bank(groups: list[Group], styles: tuple[str, ...] = STYLES) -> CaptionBank:
    names = list(dict.fromkeys(n for g in groups for n in (*g.names, *g.left_out)))
    index = {n: i for i, n in enumerate(names)}
    captions: list[str] = []
    name_of: list[int] = []
    style_of: list[int] = []
    for n, name in enumerate(names):
        for template in EMBEDDED_TEMPLATES:
            captions.append(fill(template, name))
            name_of.append(n)
            style_of.append(-1)
        for s, style in enumerate(styles):
            for template in STYLE_TEMPLATES[style]:
                captions.append(fill(template, name))
                name_of.append(n)
                style_of.append(s)
    positive = torch.zeros((len(groups), len(names)), dtype=torch.bool)
    left_out = torch.zeros_like(positive)
    for g, group in enumerate(groups):
        positive[g, [index[n] for n in group.names]] = True
        if group.left_out:
            left_out[g, [index[n] for n in group.left_out]] = True
    left_out &= ~positive
    return CaptionBank(captions, np.asarray(name_of), np.asarray(style_of), names, groups, positive, left_out)
