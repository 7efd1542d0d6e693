"""Other names a forgotten subgroup could be found by: the texts the stress test sweeps (and the forget stage trains
against, docs/decisions.md D34).

From a few *base names* (the names the method mined, the forget images' own folder names, a name the user gives),
WordNet 3.0 adds each name's synonyms, hyponyms (two levels: "pygmy marmoset" under "marmoset") and hypernyms
(one level: "new world monkey"); descriptive templates turn every name into several texts ("marmoset", "a close-up
photo of a marmoset.", "a marmoset in the wild."). Texts found by optimisation against a model are added by the
caller (:func:`nearest_names`), since they depend on the model under attack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from clipforget.data.wordnet import WordNet

# the bare name first: a person types "marmoset" as often as a sentence
TEMPLATES = ("{}", "a photo of a {}.", "a close-up photo of a {}.", "a {} in the wild.", "a small {}.",
             "a blurry photo of the {}.", "a picture showing a {}.", "the {}.", "a cropped photo of the {}.",
             "a bright photo of a {}.", "a dark photo of the {}.", "a good photo of a {}.",
             "a low resolution photo of the {}.", "itap of a {}.", "a photo of a large {}.", "a bad photo of a {}.",
             "a photo of one {}.", "a photo of my {}.", "a black and white photo of a {}.", "an image of a {}.")
TRAINING_TEMPLATES = TEMPLATES[:4]  # what the forget stage trains against; the other sixteen stay unseen (D34)


@dataclass(frozen=True)
class Paraphrase:
    text: str
    name: str
    family: str  # base | synonym | hyponym | hypernym | optimised | user


def folder_name(raw: str) -> str | None:
    """A folder name as a person would write it (``pygmy_marmoset`` -> ``pygmy marmoset``); ``None`` for names
    that say nothing (``forget``, ``images``, ``0012``)."""
    name = re.sub(r"[_\-]+", " ", raw).strip().lower()
    if not name or not re.search(r"[a-z]{3}", name) or name in {"forget", "retain", "images", "train", "val",
                                                                  "test", "photos", "upload", "uploads", "data"}:
        return None
    return name


def related_names(base: Iterable[str], wordnet: WordNet | None, per_relation: int = 12) -> dict[str, str]:
    """``{name: family}``: the base names, then WordNet's synonyms, hyponyms and hypernyms of each one's first
    noun sense (at most ``per_relation`` of each per base name; names of more than four words are left out)."""
    found: dict[str, str] = {}
    base = [b.strip().lower() for b in base if b and b.strip()]
    for name in base:
        found.setdefault(name, "base")
    if wordnet is None:
        return found
    for name in base:
        senses = wordnet.synsets(name)
        if not senses:
            continue
        sense = senses[0]
        groups = (("synonym", list(sense.words)),
                  ("hyponym", [w for s in wordnet.hyponyms(sense.offset, 2) for w in s.words]),
                  ("hypernym", [w for s in wordnet.hypernyms(sense.offset, 1) for w in s.words]))
        for family, words in groups:
            kept = [w for w in dict.fromkeys(words) if len(w.split()) <= 4 and w not in found]
            for w in kept[:per_relation]:
                found[w] = family
    return found


def expand(names: dict[str, str], templates: Sequence[str] = TEMPLATES) -> list[Paraphrase]:
    """Every name in every template (hypernyms only in the first two: they name the siblings too)."""
    out = [Paraphrase(t.format(name), name, family) for name, family in names.items()
           for t in (templates if family != "hypernym" else templates[:2])]
    return list({p.text: p for p in out}.values())


def nearest_names(image_embeddings: np.ndarray, other_embeddings: np.ndarray, name_embeddings: np.ndarray,
                  names: Sequence[str], n: int) -> list[str]:
    """The ``n`` names whose text embedding best tells ``image_embeddings`` (the subgroup) from
    ``other_embeddings``: mean cosine to the subgroup minus the mean to the others (an attacker holding a few
    photos and the model)."""
    score = (image_embeddings @ name_embeddings.T).mean(0) - (other_embeddings @ name_embeddings.T).mean(0)
    return [names[i] for i in np.argsort(-score)[:n]]
