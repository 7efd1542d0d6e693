"""The ImageNet sample images (one per class), the ImageNet-1k class list and the BREEDS LIVING-17 hierarchy."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from clipforget.core.errors import DataError
from clipforget.core.paths import data_root, existing

from .cache import cached_imageset
from .images import ImageSet, read_images

# ImageNet-1k classes that show a CIFAR-10 class (by ImageNet index). ImageNet has no deer: the three antelopes
# stand in for it. "wing" photos show aircraft wings; submarine and the non-truck vans are left out on purpose.
IMAGENET_TO_CIFAR10: dict[str, tuple[int, ...]] = {
    "airplane": (404, 895, 908),
    "automobile": (436, 468, 511, 609, 627, 656, 661, 751, 817),
    "bird": tuple(range(7, 25)) + tuple(range(80, 101)) + tuple(range(127, 147)),
    "cat": (281, 282, 283, 284, 285),
    "deer": (351, 352, 353),
    "dog": tuple(range(151, 269)),
    "frog": (30, 31, 32),
    "horse": (339,),
    "ship": (403, 484, 510, 554, 625, 628, 724, 780, 814, 871, 914),
    "truck": (555, 569, 675, 717, 734, 803, 864, 867),
}


# ImageNet-1k has two classes named "crane" and two named "maillot": their display names tell them apart.
DISPLAY_OVERRIDES = {"n02012849": "crane bird", "n03126707": "construction crane", "n03710721": "tank suit"}


def short_name(name: str) -> str:
    """``"box turtle, box tortoise"`` -> ``"box turtle"`` (the first WordNet synonym)."""
    return name.split(",")[0].strip()


@lru_cache(maxsize=4)
def _names_by_wnid(root: str) -> dict[str, str]:
    return {c["wnid"]: DISPLAY_OVERRIDES.get(c["wnid"], short_name(c["name"])) for c in imagenet_classes(root)}


def display_name(wnid: str, root: str | os.PathLike | None = None) -> str:
    """The name an ImageNet class is shown and prompted with: its first WordNet synonym, unique over the 1,000."""
    names = _names_by_wnid(str(data_root(root)))
    if wnid not in names:
        raise DataError(f"{wnid} is not an ImageNet-1k class")
    return names[wnid]


def imagenet_names(root: str | os.PathLike | None = None) -> list[str]:
    """Display names of the 1,000 classes, in ImageNet index order (all distinct)."""
    return [display_name(c["wnid"], root) for c in imagenet_classes(root)]


def imagenet_classes(root: str | os.PathLike | None = None) -> list[dict]:
    """The 1,000 ImageNet-1k classes: ``index``, ``wnid``, ``name`` (WordNet synonyms, comma separated)."""
    path = existing(data_root(root) / "breeds" / "imagenet-classes.json", "ImageNet class list")
    return json.loads(path.read_text(encoding="utf-8"))


def living17(root: str | os.PathLike | None = None) -> dict[str, list[dict]]:
    """BREEDS LIVING-17: superclass -> its four ImageNet subclasses (``imagenet_index``, ``wnid``, ``name``)."""
    path = existing(data_root(root) / "breeds" / "living17.json", "BREEDS LIVING-17 split")
    return json.loads(path.read_text(encoding="utf-8"))


def imagenet_samples(size: int, indices: dict[str, tuple[int, ...]] | None = None,
                     root: str | os.PathLike | None = None) -> ImageSet:
    """The ImageNet sample images whose class index is listed, labelled by the dict key (default: CIFAR mapping)."""
    indices = indices or IMAGENET_TO_CIFAR10
    folder = existing(data_root(root) / "imagenet-samples", "ImageNet samples folder", folder=True)
    by_wnid = {p.name.split("_", 1)[0]: p for p in folder.iterdir()}
    classes = imagenet_classes(root)
    found = [(by_wnid[classes[i]["wnid"]], label) for label, ids in indices.items() for i in ids
             if classes[i]["wnid"] in by_wnid]
    return read_images([path for path, _ in found], size, [label for _, label in found])


def imagenet_all_samples(size: int, root: str | os.PathLike | None = None) -> ImageSet:
    """All 1,000 ImageNet sample images, labelled by display name (evaluation only)."""
    folder = existing(data_root(root) / "imagenet-samples", "ImageNet samples folder", folder=True)

    def build() -> ImageSet:
        known = _names_by_wnid(str(data_root(root)))
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.split("_", 1)[0] in known)
        return read_images(files, size, [known[p.name.split("_", 1)[0]] for p in files])

    return cached_imageset("imagenet-samples-all", folder, size, build)
