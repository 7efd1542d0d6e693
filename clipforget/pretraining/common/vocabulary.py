"""Class names of the bundled model's evaluation sets, as data.

* ImageNet / Tiny-ImageNet classes are named by their WordNet synonyms (``imagenet-classes.json`` /
  ``tiny-imagenet/classes.json``, comma separated); a trailing Latin binomial (a capitalised word followed by
  lower-case words, e.g. "Carassius auratus") is dropped: MiniLM knows them poorly and people do not search with them.
  The first synonym is the class's display name (zero-shot evaluation uses it).
* monkeys10 species get theirs by hand.
"""

from __future__ import annotations

import re
from collections import Counter

MONKEYS10_NAMES: dict[str, tuple[str, ...]] = {
    "mantled_howler": ("mantled howler", "howler monkey"),
    "patas_monkey": ("patas monkey", "patas"),
    "bald_uakari": ("bald uakari", "uakari"),
    "japanese_macaque": ("japanese macaque", "snow monkey", "macaque"),
    "pygmy_marmoset": ("pygmy marmoset", "marmoset"),
    "white_headed_capuchin": ("white-headed capuchin", "capuchin"),
    "silvery_marmoset": ("silvery marmoset", "marmoset"),
    "common_squirrel_monkey": ("common squirrel monkey", "squirrel monkey"),
    "black_headed_night_monkey": ("black-headed night monkey", "night monkey", "owl monkey"),
    "nilgiri_langur": ("nilgiri langur", "langur"),
}


def monkey_display_name(species: str) -> str:
    """The zero-shot class name of a monkeys10 folder (its first name)."""
    return MONKEYS10_NAMES[species][0]


# --- WordNet names --------------------------------------------------------------------------------------------

_BINOMIAL = re.compile(r"^[A-Z][a-z]+( [a-z]+)+$")


def synonyms(wordnet_name: str) -> tuple[str, ...]:
    """Comma-separated WordNet synonyms, Latin binomials and duplicates dropped; never empty."""
    parts = [p.strip() for p in wordnet_name.split(",") if p.strip()]
    if len(parts) > 1 and _BINOMIAL.match(parts[-1]):  # WordNet puts the Latin name last
        parts = parts[:-1]
    return tuple(dict.fromkeys(parts))


def display_name(wordnet_name: str) -> str:
    """First synonym (the class name used in zero-shot evaluation)."""
    return synonyms(wordnet_name)[0]


def imagenet_display_names(imagenet: list[dict]) -> list[str]:
    """First synonyms; the two duplicated ones (crane, maillot) disambiguated."""
    names = [display_name(c["name"]) for c in imagenet]
    seen = Counter(names)
    fixes = {134: "crane bird", 517: "crane machine", 638: "maillot swimsuit", 639: "tank suit"}
    return [fixes.get(i, n) if seen[n] > 1 else n for i, n in enumerate(names)]
