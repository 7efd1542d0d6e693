"""Gallery indexes per model, built once with :mod:`index_builder` and cached under ``<cache>/indexes``.

Several processes may want the same index at once (the app and its workers): a lock file next to the index folder
(``flock``) lets one build while the others wait and then load what it wrote.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from clipforget.core.errors import DataError, IndexLoadError
from clipforget.core.locks import file_lock, path_lock
from clipforget.core.paths import safe_name
from clipforget.core.progress import ProgressFn, no_progress
from clipforget.methods.ours import ThreeStageConfig
from clipforget.methods.registry import get_method
from clipforget.models.factory import ClipBundle, weights_fingerprint
from clipforget.models.prefix import plan_cut
from clipforget.retrieval.index import GalleryIndex, load_index
from index_builder.build import BuildConfig, build
from index_builder.encoder import ClipImageEncoder

INTERRUPTIBLE_BATCH = 64  # images per batch of a build that a queued run may stop (about a second on a CPU)


def index_folder(cache_root: Path, bundle: ClipBundle, gallery: str) -> Path:
    """Where gallery ``gallery``'s index for ``bundle`` lives (changes when the model's weights change)."""
    model = f"{safe_name(bundle.spec.split('/')[-1])}-{weights_fingerprint(bundle)}"
    return Path(cache_root) / "indexes" / model / safe_name(gallery)


def grid_activation_stage(bundle: ClipBundle) -> str | None:
    """Where the default method's runs cut the image tower (the first stage it may change): a gallery's index stores
    the activations entering it, so every run's alpha grid starts from them (docs/decisions.md D18)."""
    cut = plan_cut(bundle.model.visual, bundle.example_input(), get_method("ours").layers(ThreeStageConfig(), bundle))
    return cut.first_suffix_stage if cut is not None and cut.kind == "chain" else None


def ensure_gallery_index(cache_root: Path, bundle: ClipBundle, gallery: str, sources: Sequence[str | Path],
                         mmap: bool = False, workers: int = 0, progress: ProgressFn = no_progress,
                         cancel: threading.Event | None = None, build_missing: bool = True) -> GalleryIndex:
    """Load the gallery's index, building it first if needed (one builder per folder at a time); a new index also
    stores its activations at :func:`grid_activation_stage`. A build reports to ``progress`` and stops, between two
    batches, once ``cancel`` is set (:class:`RunCancelled`). ``build_missing=False``: a missing index is a
    :class:`DataError` instead (a request must not pay for a build)."""
    folder = index_folder(cache_root, bundle, gallery)
    with path_lock(folder), file_lock(folder.parent / f".{folder.name}.lock"):
        try:
            return load_index(folder, mmap=mmap)
        except IndexLoadError:
            if not build_missing:
                raise DataError(f"gallery {gallery!r} is not indexed for this model yet: open a run on it first "
                                "(or wait a few minutes while the server prepares it)") from None
            missing = [Path(p).name for p in sources if not Path(p).is_dir()]
            if missing:
                raise DataError(f"gallery {gallery!r}: folder(s) not found: {', '.join(missing)}") from None
            # a build that may be stopped (the warm-up's) goes in small batches: it stops within one of them
            batch = INTERRUPTIBLE_BATCH if cancel is not None else BuildConfig.batch_size
            build([str(p) for p in sources], folder, BuildConfig(model=bundle.spec, batch_size=batch, progress=False,
                  workers=workers, activations_at=grid_activation_stage(bundle)), ClipImageEncoder(bundle), progress,
                  cancel)
            return load_index(folder, mmap=mmap)
