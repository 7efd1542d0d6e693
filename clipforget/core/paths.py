"""Where clipforget reads data and keeps its caches.

Data root: ``--data-root`` flag, else ``$CLIPFORGET_DATA``, else ``../shared/data`` next to the repository.
Cache dir: ``--cache-dir`` flag, else ``$CLIPFORGET_CACHE``, else ``~/.cache/clipforget``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def safe_name(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]`` (other runs become ``_``), usable as one path component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"
