"""Caption vocabulary of the embedded model: class names, coarse words and styles, as data.

* ImageNet / Tiny-ImageNet classes are named by their WordNet synonyms (``imagenet-classes.json`` /
  ``tiny-imagenet/classes.json``, comma separated). a trailing Latin binomial (a capitalised word followed by lower-case
  words, e.g. "Carassius auratus") is dropped from the captions: MiniLM knows them poorly and people do
  not search with them. The first synonym is the class's display name (zero-shot evaluation uses it).
* Coarse words come from ImageNet index ranges (the 1000 classes are ordered by WordNet subtree), plus hand lists for
  vehicles and cars; CIFAR-10 and monkeys10 classes get theirs by hand.
* Styles and their templates are clipforget's (``clipforget.data.prompts.STYLE_TEMPLATES``), so captions for styled
  copies say the style; neutral templates are ``EMBEDDED_TEMPLATES``.
"""

from __future__ import annotations

import re
from collections import Counter

# --- coarse words by ImageNet index ---------------------------------------------------------------------------

_RANGES: list[tuple[range, tuple[str, ...]]] = [
    (range(0, 7), ("fish", "animal")),
    (range(7, 25), ("bird", "animal")),
    (range(25, 33), ("amphibian", "animal")),
    (range(30, 33), ("frog",)),
    (range(33, 69), ("reptile", "animal")),
    (range(33, 38), ("turtle",)),
    (range(38, 49), ("lizard",)),
    (range(52, 69), ("snake",)),
    (range(69, 80), ("animal",)),
    (range(72, 78), ("spider",)),
    (range(80, 101), ("bird", "animal")),
    (range(101, 107), ("mammal", "animal")),
    (range(107, 127), ("sea creature", "animal")),
    (range(118, 127), ("crustacean",)),
    (range(127, 147), ("bird", "animal")),
    (range(147, 151), ("sea creature", "mammal", "animal")),
    (range(151, 269), ("dog", "mammal", "animal")),
    (range(269, 281), ("wild dog", "mammal", "animal")),
    (range(281, 286), ("cat", "mammal", "animal")),
    (range(286, 294), ("big cat", "wild cat", "mammal", "animal")),
    (range(294, 298), ("bear", "mammal", "animal")),
    (range(298, 300), ("mammal", "animal")),
    (range(300, 321), ("insect", "animal")),
    (range(300, 307), ("beetle",)),
    (range(321, 327), ("insect", "butterfly", "animal")),
    (range(327, 330), ("sea creature", "animal")),
    (range(330, 339), ("mammal", "animal")),
    (range(333, 339), ("rodent",)),
    (range(339, 341), ("horse", "mammal", "animal")),
    (range(341, 344), ("pig", "mammal", "animal")),
    (range(344, 346), ("mammal", "animal")),
    (range(345, 348), ("cattle",)),
    (range(348, 354), ("mammal", "animal")),
    (range(351, 354), ("antelope",)),
    (range(354, 365), ("mammal", "animal")),
    (range(365, 385), ("primate", "mammal", "animal")),
    (range(365, 370), ("ape",)),
    (range(370, 383), ("monkey",)),
    (range(383, 385), ("lemur",)),
    (range(385, 389), ("mammal", "animal")),
    (range(385, 387), ("elephant",)),
    (range(389, 398), ("fish", "animal")),
]

CARS = (407, 436, 468, 511, 609, 627, 656, 661, 751, 817)
TRUCKS = (555, 569, 675, 717, 734, 803, 864, 867)
BUSES = (654, 779, 874)
TRAINS = (466, 547, 565, 705, 820, 829)
BOATS = (403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914)
AIRCRAFT = (404, 405, 895, 908)
BIKES = (444, 665, 670, 671, 880)
OTHER_VEHICLES = (408, 573, 575, 586, 603, 612, 847, 866)
FOOD = tuple(range(924, 970))
PLACES = (970, 972, 973, 974, 975, 976, 977, 978, 979, 980)


def imagenet_coarse(index: int) -> tuple[str, ...]:
    """Coarse words of ImageNet class ``index`` (possibly none, e.g. for most household objects)."""
    words: list[str] = []
    for span, names in _RANGES:
        if index in span:
            words.extend(names)
    groups = [
        (CARS, ("car", "automobile", "vehicle")),
        (TRUCKS, ("truck", "vehicle")),
        (BUSES, ("bus", "vehicle")),
        (TRAINS, ("train", "vehicle")),
        (BOATS, ("boat", "ship", "vehicle")),
        (AIRCRAFT, ("aircraft", "vehicle")),
        (BIKES, ("vehicle",)),
        (OTHER_VEHICLES, ("vehicle",)),
        (FOOD, ("food",)),
        (PLACES, ("landscape",)),
    ]
    for members, names in groups:
        if index in members:
            words.extend(names)
    return tuple(dict.fromkeys(words))


# --- CIFAR-10 and monkeys10 -----------------------------------------------------------------------------------

CIFAR10_NAMES: dict[str, tuple[str, ...]] = {
    "airplane": ("airplane", "plane"),
    "automobile": ("automobile", "car"),
    "bird": ("bird",),
    "cat": ("cat",),
    "deer": ("deer",),
    "dog": ("dog",),
    "frog": ("frog",),
    "horse": ("horse",),
    "ship": ("ship", "boat"),
    "truck": ("truck",),
}
CIFAR10_COARSE: dict[str, tuple[str, ...]] = {
    "airplane": ("aircraft", "vehicle"),
    "automobile": ("vehicle",),
    "bird": ("animal",),
    "cat": ("mammal", "animal"),
    "deer": ("mammal", "animal"),
    "dog": ("mammal", "animal"),
    "frog": ("amphibian", "animal"),
    "horse": ("mammal", "animal"),
    "ship": ("vehicle",),
    "truck": ("vehicle",),
}

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
MONKEYS10_COARSE = ("monkey", "primate", "mammal", "animal")
# ImageNet classes that show each species (bald uakari and night monkeys have none).
MONKEYS10_IMAGENET: dict[str, tuple[int, ...]] = {
    "mantled_howler": (379,),
    "patas_monkey": (371,),
    "japanese_macaque": (373,),
    "pygmy_marmoset": (377,),
    "white_headed_capuchin": (378,),
    "silvery_marmoset": (377,),
    "common_squirrel_monkey": (382,),
    "nilgiri_langur": (374,),
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
