"""Atomic file writes (a killed process never leaves a half-written file that a later load accepts) and JSON reads.

Folders are written the same way: into a private ``.<name>.<random>.partial`` sibling (:func:`partial_dir`; two
writers of the same folder never share one) that :func:`replace_dir` renames into place under the target's lock.
Start-up clean-up removes ``.*.partial`` leftovers of a killed process."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .locks import path_lock


def write_atomic(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temporary file onto ``path`` (same folder, same filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def partial_dir(dest: str | os.PathLike) -> Path:
    """A new, private temporary folder next to ``dest`` (same filesystem) to build ``dest`` in."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))


def replace_dir(tmp: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Put the folder ``tmp`` in the place of ``dest`` (what ``dest`` held is deleted). Two threads that finish at
    once take turns: the last one's folder stays, whole."""
    dest = Path(dest)
    with path_lock(dest):
        if dest.exists() or dest.is_symlink():
            # moved aside first, under a name start-up clean-up knows: ``dest`` is never seen half-deleted
            old = dest.with_name(Path(tmp).name.removesuffix(".partial") + ".old.partial")
            os.replace(dest, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dest)
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, sort_keys=False, default=_json_default)
            handle.write("\n")

    return write_atomic(path, _write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""

    def _write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    return write_atomic(path, _write)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from ``path``, or ``{}`` when it is missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
