"""Where clipforget reads data and keeps its caches.

Data root: ``--data-root`` flag, else ``$CLIPFORGET_DATA``, else ``../shared/data`` next to the repository.
Cache dir: ``--cache-dir`` flag, else ``$CLIPFORGET_CACHE``, else ``~/.cache/clipforget``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = REPO_ROOT / "assets"


def data_root(override: str | os.PathLike | None = None) -> Path:
    """Return the data root folder (it may not exist; readers raise a clear error then)."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("CLIPFORGET_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Return (and create) the cache folder for decoded datasets, embedded weights and runs."""
    if override:
        path = Path(override).expanduser()
    elif os.environ.get("CLIPFORGET_CACHE"):
        path = Path(os.environ["CLIPFORGET_CACHE"]).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        path = Path(base) / "clipforget"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def existing(path: Path, what: str, folder: bool = False) -> Path:
    """``path`` when it is a file (a folder with ``folder``), else a :class:`DataError`: ``what`` not found there."""
    if not (path.is_dir() if folder else path.is_file()):
        raise DataError(f"{what} not found: {path}")
    return path


def safe_name(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]`` (other runs become ``_``), usable as one path component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read a MiB at a time."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
