"""Gallery indexes per model, built once with :mod:`index_builder` and cached under ``<cache>/indexes``.

Several processes may want the same index at once (the app and its workers): a lock file next to the index folder
(``flock``) lets one build while the others wait and then load what it wrote.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from clipforget.core.errors import DataError, IndexLoadError
from clipforget.core.paths import safe_name
from clipforget.models.factory import ClipBundle, weights_fingerprint
from clipforget.retrieval.index import GalleryIndex, load_index
from index_builder.build import BuildConfig, build
from index_builder.encoder import ClipImageEncoder

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def index_folder(cache_root: Path, bundle: ClipBundle, gallery: str) -> Path:
    """Where gallery ``gallery``'s index for ``bundle`` lives (changes when the model's weights change)."""
    model = f"{safe_name(bundle.spec.split('/')[-1])}-{weights_fingerprint(bundle)}"
    return Path(cache_root) / "indexes" / model / safe_name(gallery)


def ensure_gallery_index(cache_root: Path, bundle: ClipBundle, gallery: str, sources: Sequence[str | Path],
                         mmap: bool = False, workers: int = 0) -> GalleryIndex:
    """Load the gallery's index, building it first if needed (one builder per folder at a time)."""
    folder = index_folder(cache_root, bundle, gallery)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(folder, threading.Lock())
    with lock, _file_lock(folder.parent / f".{folder.name}.lock"):
        try:
            return load_index(folder, mmap=mmap)
        except IndexLoadError:
            missing = [Path(p).name for p in sources if not Path(p).is_dir()]
            if missing:
                raise DataError(f"gallery {gallery!r}: folder(s) not found: {', '.join(missing)}") from None
            build([str(p) for p in sources], folder, BuildConfig(model=bundle.spec, progress=False, workers=workers),
                  ClipImageEncoder(bundle))
            return load_index(folder, mmap=mmap)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX ``flock``; elsewhere only the in-process lock applies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
