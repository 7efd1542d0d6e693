"""The "10 Monkey Species" photos: ``monkeys10/{train,val}/<species>/*``, labelled by species display name.

Two species are marmosets (pygmy and silvery), the subgroup of the paper's "marmoset in monkey" setting. ``val`` is
evaluation only. The data's warts are kept: a file without an extension is skipped with its reason.
"""

from __future__ import annotations

import os

from clipforget.core.errors import DataError
from clipforget.core.paths import data_root, existing

from .cache import cached_imageset
from .images import ImageSet, list_image_files, read_images

SPECIES: dict[str, str] = {  # folder name -> display name
    "mantled_howler": "mantled howler",
    "patas_monkey": "patas monkey",
    "bald_uakari": "bald uakari",
    "japanese_macaque": "Japanese macaque",
    "pygmy_marmoset": "pygmy marmoset",
    "white_headed_capuchin": "white-headed capuchin",
    "silvery_marmoset": "silvery marmoset",
    "common_squirrel_monkey": "common squirrel monkey",
    "black_headed_night_monkey": "black-headed night monkey",
    "nilgiri_langur": "Nilgiri langur",
}
MARMOSETS = ("pygmy marmoset", "silvery marmoset")


def monkeys10(split: str, size: int, root: str | os.PathLike | None = None) -> ImageSet:
    """All photos of ``split`` (``train`` / ``val``), labelled by species display name."""
    if split not in ("train", "val"):
        raise DataError(f"monkeys10 split must be train or val, not {split!r}")
    folder = existing(data_root(root) / "monkeys10" / split, "monkeys10 folder", folder=True)

    def build() -> ImageSet:
        files = [p for p in list_image_files(folder)
                 if len(p.relative_to(folder).parts) == 2 and p.parent.name in SPECIES]
        return read_images(files, size, [SPECIES[p.parent.name] for p in files])

    return cached_imageset(f"monkeys10-{split}", folder, size, build)
